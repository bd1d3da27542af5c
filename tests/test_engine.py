import dataclasses
import threading

import pytest
import torch

from gptlab.config import GPTConfig
from gptlab.engine import Engine, EngineLimits, QueueFull
from gptlab.generation import Completion, GenerationSettings
from gptlab.model import GPT
from gptlab.tokenizer import CharTokenizer

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,!?ABCDEFGHIJKLMNOPQRS"  # 50 characters
TOKENIZER = CharTokenizer(ALPHABET)
GREEDY = GenerationSettings(max_new_tokens=24, temperature=0)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, context_length=96, n_layer=2, n_head=2, n_embd=32)).eval()


@pytest.fixture(scope="module")
def llama() -> GPT:
    torch.manual_seed(1)
    return GPT(GPTConfig(vocab_size=50, context_length=128, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                         positions="rope", norm="rmsnorm", mlp="swiglu", bias=False, qkv_bias=False)).eval()


def alone(model: GPT, prompt: str, settings: GenerationSettings) -> tuple[str, Completion]:
    """What `gptlab generate` prints for the prompt by itself (the same Completion)."""
    completion = Completion(model, TOKENIZER, TOKENIZER.encode(prompt), settings)
    return "".join(completion), completion


def concurrently(engine: Engine, prompts: list[str], settings: list[GenerationSettings]) -> list[tuple]:
    """Submit every prompt from its own thread at once; each thread reads its own stream."""
    results: list[tuple] = [None] * len(prompts)
    start = threading.Barrier(len(prompts))

    def run(i: int) -> None:
        start.wait()
        completion = engine.submit(TOKENIZER, TOKENIZER.encode(prompts[i]), settings[i])
        results[i] = ("".join(completion), completion.ids, completion.finish_reason, completion.logprobs)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


PROMPTS = [("the quick brown fox " * 3)[: 1 + 3 * i] for i in range(16)]  # 1 to 46 characters


@pytest.mark.parametrize("which", ["model", "llama"])
def test_sixteen_concurrent_greedy_requests_each_equal_generation_alone(which, request):
    model = request.getfixturevalue(which)
    lengths = [GenerationSettings(max_new_tokens=8 + (7 * i) % 30, temperature=0) for i in range(16)]
    engine = Engine(model, EngineLimits(max_batch=5, max_queue=16))  # rows join and leave mid-run
    try:
        results = concurrently(engine, PROMPTS, lengths)
    finally:
        engine.close()
    for prompt, settings, (text, ids, reason, _) in zip(PROMPTS, lengths, results, strict=True):
        expected, completion = alone(model, prompt, settings)
        assert (text, ids, reason) == (expected, completion.ids, completion.finish_reason)
    assert engine.stats().running == 0 and engine.stats().queued == 0


def test_each_request_keeps_its_own_seed_settings_stops_and_logprobs(model):
    sampled = GenerationSettings(max_new_tokens=20, temperature=1.3, top_k=20, seed=7, logprobs=2)
    _, free = alone(model, PROMPTS[5], GREEDY)
    stopping = dataclasses.replace(GREEDY, stop_ids=(free.ids[6],))
    text_stop = dataclasses.replace(GREEDY, stop_strings=(TOKENIZER.decode(free.ids[3:5]),))
    mixed = [sampled, GREEDY, stopping, text_stop, dataclasses.replace(sampled, seed=8, top_p=0.9)]
    prompts = [PROMPTS[3], PROMPTS[9], PROMPTS[5], PROMPTS[5], PROMPTS[3]]
    engine = Engine(model, EngineLimits(max_batch=3))
    try:
        results = concurrently(engine, prompts, mixed)
        again = concurrently(engine, prompts[:1], mixed[:1])[0]
    finally:
        engine.close()
    for prompt, settings, (text, ids, reason, logprobs) in zip(prompts, mixed, results, strict=True):
        expected, completion = alone(model, prompt, settings)
        assert (text, ids, reason) == (expected, completion.ids, completion.finish_reason)
        assert len(logprobs) == len(completion.logprobs) == (len(ids) if settings.logprobs is not None else 0)
        for got, want in zip(logprobs, completion.logprobs, strict=True):  # batched matmuls: equal to ~1e-6
            assert got.id == want.id and [i for i, _ in got.top] == [i for i, _ in want.top]
            assert max(abs(a - b) for a, b in [(got.logprob, want.logprob), *zip(
                [p for _, p in got.top], [p for _, p in want.top], strict=True)]) < 1e-5
    assert results[2][2] == "stop" and len(results[2][1]) == free.ids.index(free.ids[6])
    assert results[3][2] == "stop" and len(results[3][1]) < 24
    assert again[:2] == results[0][:2]  # a seed gives the same sample alone, beside others, and again
    assert results[0][1] != results[4][1]


def test_a_padded_vocabulary_yields_only_the_tokenizers_ids_alone_and_in_the_engine():
    """The embedding has 10 rows more than the tokenizer has characters (as Qwen2.5, Phi-3 and Pythia
    pad theirs), rigged to win every pick; greedy and sampled, alone and batched, none comes out."""
    torch.manual_seed(2)
    padded = GPT(GPTConfig(vocab_size=60, context_length=96, n_layer=2, n_head=2, n_embd=32)).eval()
    with torch.no_grad():  # the final hidden state is 10 along dim 0, where only the padded rows weigh
        padded.ln_f.weight[0], padded.ln_f.bias[0] = 0.0, 10.0
        padded.lm_head.weight[:, 0] = 0.0
        padded.lm_head.weight[50:, 0] = 10.0
    greedy = GenerationSettings(max_new_tokens=80, temperature=0, logprobs=5)
    sampled = GenerationSettings(max_new_tokens=80, temperature=1.0, seed=3, logprobs=5)
    engine = Engine(padded, EngineLimits(max_batch=2))
    try:
        results = concurrently(engine, ["abc", "abc"], [greedy, sampled])
    finally:
        engine.close()
    for settings, (text, ids, reason, logprobs) in zip([greedy, sampled], results, strict=True):
        expected, completion = alone(padded, "abc", settings)
        assert (text, ids, reason) == (expected, completion.ids, "length") and len(ids) == 80
        assert max(ids) < len(ALPHABET) and max(i for lp in logprobs for i, _ in lp.top) < len(ALPHABET)
    assert len(set(results[1][1])) > 10  # sampled among the real ids, not stuck on one


def test_a_cancelled_or_abandoned_request_frees_its_slot_at_once(model):
    engine = Engine(model, EngineLimits(max_batch=1, max_queue=4))
    long = GenerationSettings(max_new_tokens=90, temperature=0)
    try:
        first = engine.submit(TOKENIZER, [1, 2], long)
        pieces = iter(first)
        next(pieces)
        first.cancel()
        assert len(list(pieces)) <= 2 and first.finish_reason == "cancelled" and len(first.ids) < 90
        closed = engine.submit(TOKENIZER, [1, 2], long)
        reader = iter(closed)
        next(reader)
        reader.close()  # the reader left mid-stream
        assert closed.finish_reason == "cancelled"
        engine.submit(TOKENIZER, [1, 2], long)  # dropped unread: garbage collection cancels it
        expected, _ = alone(model, "abc", GREEDY)
        assert "".join(engine.submit(TOKENIZER, TOKENIZER.encode("abc"), GREEDY)) == expected
    finally:
        engine.close()


def test_queue_full_past_max_queue_and_close_without_draining_cancels(model):
    engine = Engine(model, EngineLimits(max_batch=1, max_queue=1))
    long = GenerationSettings(max_new_tokens=90, temperature=0)
    running = engine.submit(TOKENIZER, [1, 2], long)
    waiting = engine.submit(TOKENIZER, [3], long)
    with pytest.raises(QueueFull, match="max_queue=1"):
        engine.submit(TOKENIZER, [4], long)
    engine.close(drain=False)
    "".join(running), "".join(waiting)
    assert running.finish_reason == waiting.finish_reason == "cancelled"
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(TOKENIZER, [4], long)
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        EngineLimits(max_batch=0)


def test_responses_decoded_together_equal_each_record_generated_alone():
    """`gptlab respond` and run folders: records join the engine as others end; text as one by one."""
    from gptlab.data.instruction import Record
    from gptlab.evaluation.responses import cut_at_stop, generate_responses
    from gptlab.generation import generate
    from gptlab.models import preset_config
    from gptlab.prompts import prompt_style
    from gptlab.tokenizer import GPT2Tokenizer

    torch.manual_seed(0)
    tiny, tokenizer, style = GPT(preset_config("gpt-tiny")).eval(), GPT2Tokenizer(), prompt_style("alpaca")
    records = [Record(instruction=f"Say {'more ' * i}words.", input="" if i % 2 else "x " * i, output="", original={})
               for i in range(7)]
    together = list(generate_responses(tiny, tokenizer, style, records, max_new_tokens=12, max_batch=3))
    settings = GenerationSettings(max_new_tokens=12, temperature=0).stopping_for(tokenizer)
    alone = [cut_at_stop(tokenizer.decode(list(generate(tiny, tokenizer.encode(style.prompt(r.instruction, r.input)),
                                                        settings))), style.stop_strings) for r in records]
    assert together == alone and len(set(alone)) > 1


def test_compile_falls_back_to_eager_decoding_with_a_clear_message(model, monkeypatch, caplog):
    from gptlab.generation import compile_decode

    def unavailable(fn, **kwargs):
        def fail(*args, **kwargs):
            raise RuntimeError("Compiler: cc is not found\nmore detail")
        return fail

    monkeypatch.setattr(torch, "compile", unavailable)
    expected, _ = alone(model, "abc", GREEDY)
    report = compile_decode(model)
    assert report.error == "Compiler: cc is not found" and model.compiled_step is None
    assert "torch.compile is unavailable here (Compiler: cc is not found); decoding uncompiled" in caplog.text
    engine = Engine(model, EngineLimits(max_batch=2), compile=True)
    try:
        assert not engine.compiled
        assert "".join(engine.submit(TOKENIZER, TOKENIZER.encode("abc"), GREEDY)) == expected
    finally:
        engine.close()
