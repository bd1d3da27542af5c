import dataclasses
import logging

import pytest
import torch

from gptlab.config import GPTConfig
from gptlab.generation import (
    Completion,
    GenerationSettings,
    decode_steps,
    generate,
    generate_batch,
    new_generator,
    pick_tokens,
    sample_next,
    stream_text,
    token_logprob,
)
from gptlab.model import GPT
from gptlab.tokenizer import CharTokenizer

CONFIG = GPTConfig(vocab_size=50, context_length=96, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


def test_greedy_is_argmax_and_top_k_1_or_tiny_top_p_is_greedy():
    logits = torch.randn(4, 50)
    greedy = sample_next(logits, temperature=0)
    assert torch.equal(greedy, logits.argmax(-1))
    assert torch.equal(sample_next(logits, temperature=1.0, top_k=1), greedy)
    assert torch.equal(sample_next(logits, temperature=1.0, top_p=1e-6), greedy)


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, 1.0, top_k=2, generator=gen).tolist()) == {0, 1}
    probs = logits[0].softmax(-1)  # 0.64, 0.24, 0.09, ...: p=0.8 keeps the first two
    assert probs[0] < 0.8 < probs[0] + probs[1]
    assert set(sample_next(logits, 1.0, top_p=0.8, generator=gen).tolist()) == {0, 1}
    assert set(sample_next(logits, 1.0, generator=gen).tolist()) == {0, 1, 2, 3, 4}


def test_ids_past_the_tokenizers_vocabulary_are_never_picked_nor_reported():
    """A padded embedding (Qwen2.5, Phi-3, Pythia) has rows its tokenizer lacks; whatever their logits,
    greedy and sampled rows pick among the tokenizer's ids, beside a row whose tokenizer has every id."""
    logits = torch.randn(3, 60)
    logits[:, 50:] += 100.0  # the padded ids would win every pick
    settings = [GenerationSettings(temperature=0, vocab_size=50),
                GenerationSettings(temperature=1.0, top_k=55, top_p=0.999, vocab_size=50),
                GenerationSettings(temperature=0)]
    generators = [new_generator(0, torch.device("cpu")) for _ in settings]
    picks = [pick_tokens(logits, settings, generators) for _ in range(200)]
    assert {greedy for greedy, _, _ in picks} == {int(logits[0, :50].argmax())}
    assert max(sampled for _, sampled, _ in picks) < 50 and len({sampled for _, sampled, _ in picks}) > 5
    assert {unlimited for _, _, unlimited in picks} == {int(logits[2].argmax())} and picks[0][2] >= 50
    reported = token_logprob(logits[0], 3, GenerationSettings(logprobs=20, vocab_size=50))
    assert max(i for i, _ in reported.top) < 50
    assert reported.logprob == pytest.approx(float(logits[0, :50].log_softmax(-1)[3]))
    assert GenerationSettings().stopping_for(CharTokenizer(ALPHABET)).vocab_size == len(ALPHABET)
    assert GenerationSettings(vocab_size=10).stopping_for(CharTokenizer(ALPHABET)).vocab_size == 10
    with pytest.raises(ValueError, match="vocab_size must be at least 1"):
        GenerationSettings(vocab_size=0)


def test_sampling_is_reproducible_with_a_seed(model):
    settings = GenerationSettings(max_new_tokens=20, temperature=1.0, top_k=10, seed=123)
    first = list(generate(model, [1, 2, 3], settings))
    assert first == list(generate(model, [1, 2, 3], settings))
    other = list(generate(model, [1, 2, 3], GenerationSettings(max_new_tokens=20, top_k=10, seed=7)))
    assert first != other


def test_cached_and_uncached_generation_give_identical_tokens(model):
    cached = list(generate(model, [5, 6, 7], GenerationSettings(max_new_tokens=64, temperature=0)))
    uncached = list(generate(model, [5, 6, 7], GenerationSettings(max_new_tokens=64, temperature=0, kv_cache=False)))
    assert len(cached) == 64
    assert cached == uncached


def test_a_batch_of_unequal_prompts_decodes_as_each_alone(model):
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8], [9, 10, 11]]
    settings = GenerationSettings(max_new_tokens=24, temperature=0)
    alone = [list(generate(model, p, settings)) for p in prompts]
    assert generate_batch(model, prompts, settings) == alone


def test_generation_stops_before_a_stop_id(model):
    free = list(generate(model, [3, 1], GenerationSettings(max_new_tokens=30, temperature=0)))
    stop = free[10]
    cut = list(generate(model, [3, 1], GenerationSettings(max_new_tokens=30, temperature=0, stop_ids=(stop,))))
    assert cut == free[: free.index(stop)]


def test_batch_stops_each_row_independently(model):
    prompts = [[3, 1], [4, 4, 4]]
    free = generate_batch(model, prompts, GenerationSettings(max_new_tokens=20, temperature=0))
    stop = free[0][5]
    cut = generate_batch(model, prompts, GenerationSettings(max_new_tokens=20, temperature=0, stop_ids=(stop,)))
    for row in range(2):
        expected = free[row][: free[row].index(stop)] if stop in free[row] else free[row]
        assert cut[row] == expected


def test_long_prompt_is_left_truncated_with_a_warning(model, caplog):
    prompt = list(range(50)) * 2  # 100 tokens > context 96
    settings = GenerationSettings(max_new_tokens=16, temperature=0)
    with caplog.at_level(logging.WARNING):
        out = list(generate(model, prompt, settings))
    assert "left-truncated to its last 80" in caplog.text
    assert out == list(generate(model, prompt[-80:], settings))
    assert len(out) == 16


def test_decode_steps_yields_one_tensor_per_step(model):
    steps = list(decode_steps(model, [[1, 2], [3]], GenerationSettings(max_new_tokens=5, temperature=0)))
    assert len(steps) == 5 and all(s.shape == (2,) for s in steps)


def test_empty_prompt_and_bad_settings_are_refused(model):
    with pytest.raises(ValueError, match="at least one token"):
        list(generate(model, [], GenerationSettings()))
    with pytest.raises(ValueError, match="temperature must be from 0 to 2"):
        GenerationSettings(temperature=-1)
    with pytest.raises(ValueError, match="top_p must be above 0 and at most 1"):
        GenerationSettings(top_p=1.5)


def test_stream_text_stops_before_a_stop_string_and_never_takes_back():
    tok = CharTokenizer("abcx#\n ")
    ids = tok.encode("ab c\n##x abc")
    assert "".join(stream_text(iter(ids), tok, ["##"])) == "ab c\n"
    assert "".join(stream_text(iter(ids), tok, ["#y"])) == "ab c\n##x abc"  # a near miss is released
    pieces = list(stream_text(iter(ids), tok))
    assert pieces == list("ab c\n##x abc")


class ByteTokenizer(CharTokenizer):
    """Each id is one byte, so a character can be split across tokens (as in GPT-2's BPE)."""

    def decode_bytes(self, ids):
        return bytes(ids)


def test_stream_text_holds_back_a_split_utf8_character():
    data = "é ok".encode()  # é is two bytes
    pieces = list(stream_text(iter(list(data)), ByteTokenizer("x")))
    assert pieces == ["é", " ", "o", "k"]


ALPHABET = "abcdefghijklmnopqrstuvwxyz .,!?ABCDEFGHIJKLMNOPQRS"  # 50 characters: CONFIG's vocabulary


def test_completion_reports_its_ids_and_why_it_ended(model):
    tok = CharTokenizer(ALPHABET)
    free = Completion(model, tok, [3, 1], GenerationSettings(max_new_tokens=12, temperature=0))
    text = "".join(free)
    assert free.finish_reason == "length" and len(free.ids) == 12 and text == tok.decode(free.ids)
    by_id = Completion(model, tok, [3, 1], GenerationSettings(max_new_tokens=12, temperature=0,
                                                              stop_ids=(free.ids[4],)))
    assert "".join(by_id) == tok.decode(free.ids[: free.ids.index(free.ids[4])])
    assert by_id.finish_reason == "stop"
    stop_text = text[6:8]
    by_text = Completion(model, tok, [3, 1], GenerationSettings(max_new_tokens=12, temperature=0,
                                                                stop_strings=(stop_text,)))
    assert "".join(by_text) == text[: text.index(stop_text)] and by_text.finish_reason == "stop"
    with pytest.raises(ValueError, match="empty after tokenization"):
        Completion(model, tok, [], GenerationSettings())


def test_llama_style_model_decodes_the_same_cached_uncached_and_batched():
    """RoPE positions, grouped-query heads in the cache, and each batch row at its own position all line up."""
    torch.manual_seed(0)
    llama = GPT(GPTConfig(vocab_size=50, context_length=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                          positions="rope", norm="rmsnorm", mlp="swiglu", bias=False, qkv_bias=False)).eval()
    assert llama.wpe is None
    settings = GenerationSettings(max_new_tokens=12, temperature=0)
    prompts = [[3, 1, 4, 1, 5], [9, 2]]
    alone = [list(generate(llama, p, settings)) for p in prompts]
    uncached = [list(generate(llama, p, dataclasses.replace(settings, kv_cache=False))) for p in prompts]
    assert alone == uncached == generate_batch(llama, prompts, settings)


@pytest.mark.parametrize("temperature", [5e-324, 1e-300, 1e-46, 1e-8, 1e-3])
@pytest.mark.parametrize("top_p", [None, 5e-324, 1e-46, 1e-8, 0.5])
def test_sampling_at_tiny_temperatures_and_top_p_gives_a_valid_token(temperature, top_p):
    """Legal but extreme settings (the server accepts them) never make probabilities NaN."""
    logits = torch.tensor([[1.0, 3.0, 3.0 + 1e-6, -2.0], [0.0, 0.0, 0.0, 0.0], [-1e9, 5.0, 4.0, 1e-3]])
    generator = torch.Generator().manual_seed(0)
    picked = sample_next(logits, temperature, top_k=None, top_p=top_p, generator=generator)
    assert picked.shape == (3,) and bool(((picked >= 0) & (picked < 4)).all())
    if temperature <= 1e-8 or (top_p is not None and top_p <= 1e-8):  # as good as greedy: the best token
        assert picked[0] == 2 and picked[2] == 1


def test_completion_reports_logprobs_of_each_token_and_its_alternatives(model):
    tok = CharTokenizer(ALPHABET)
    prompt = [3, 1, 4]
    completion = Completion(model, tok, prompt, GenerationSettings(max_new_tokens=6, temperature=0, logprobs=3))
    "".join(completion)
    assert [lp.id for lp in completion.logprobs] == completion.ids and len(completion.ids) == 6
    with torch.no_grad():
        full = model(torch.tensor([prompt + completion.ids]))[0].float().log_softmax(-1)  # (T, V), one pass
    for place, lp in enumerate(completion.logprobs):
        expected = full[len(prompt) - 1 + place]
        assert abs(lp.logprob - float(expected[lp.id])) < 1e-4
        assert [i for i, _ in lp.top] == expected.topk(3).indices.tolist()
        assert lp.top[0][0] == lp.id  # greedy picks the most likely token
    sampled = Completion(model, tok, prompt, GenerationSettings(max_new_tokens=4, temperature=2.0, seed=1, logprobs=0))
    "".join(sampled)
    with torch.no_grad():
        full = model(torch.tensor([prompt + sampled.ids]))[0].float().log_softmax(-1)
    for place, lp in enumerate(sampled.logprobs):  # before temperature, as OpenAI reports them
        assert lp.top == () and abs(lp.logprob - float(full[len(prompt) - 1 + place, lp.id])) < 1e-4
    assert Completion(model, tok, prompt, GenerationSettings(max_new_tokens=3)).logprobs == []
    with pytest.raises(ValueError, match="logprobs must be from 0 to 20"):
        GenerationSettings(logprobs=21)


def test_a_cancelled_completion_stops_at_the_next_token(model):
    settings = GenerationSettings(max_new_tokens=30, temperature=0)
    completion = Completion(model, CharTokenizer(ALPHABET), [3, 1], settings)
    pieces = iter(completion)
    next(pieces)
    completion.cancel()
    rest = list(pieces)
    assert completion.finish_reason == "cancelled" and len(completion.ids) < 30 and len(rest) <= 1


def test_prompts_sharing_a_beginning_compute_it_once_and_decode_as_alone(model):
    from gptlab.generation import shared_prefix_length

    shared = list(range(1, 21))  # a 20-token "chat template" every prompt starts with
    prompts = [shared + [30, 31, 32], shared + [40], shared + [41, 42, 43, 44, 45, 46, 47]]
    assert shared_prefix_length(prompts) == 20 and shared_prefix_length([[1, 2], [1, 2, 3]]) == 1
    settings = GenerationSettings(max_new_tokens=24, temperature=0)
    alone = [list(generate(model, p, settings)) for p in prompts]
    assert generate_batch(model, prompts, settings) == alone
    assert generate_batch(model, [prompts[1], prompts[1]], settings) == [alone[1], alone[1]]  # identical prompts
