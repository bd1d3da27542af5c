"""`gptlab convert SRC OUT.gguf --to gguf` for the SentencePiece-vocabulary families (Mistral, Phi-3, Gemma 3):
the vocabulary goes as llama.cpp's "llama" kind (tokens, scores, token types, BOS/EOS/unknown ids, the space
prefix) and reads back tokenizing as the source does; the weights read back through gptlab's GGUF reader and
transformers' (`gguf_file=`) with the source's logits.

A 1,000-token SentencePiece-style BPE trained here on The Verdict (`sentencepiece_vocab`), in Llama 2's
spelling (a space put before the text) and Gemma's (none)."""

from __future__ import annotations

import shutil

import pytest

from e2e.test_cli_gguf_export import IDS, convert, logits, refusal, transformers_folder, transformers_gguf
from family_checks import save_tiny
from gptlab.loading import load_model

TEXTS = ["The picture was", "  two  spaces, a café ☃ and\nnew lines", "<|user|>Hi there<|end|>", "<s>x</s>"]
LLAMA_SHAPE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def vocabulary() -> dict:
    from gptlab.files import fetch
    from sentencepiece_vocab import trained_vocabulary

    return trained_vocabulary(fetch("the-verdict").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tokenizers(vocabulary, tmp_path_factory):
    """Llama 2's kind and Gemma's kind of tokenizer.json, and the vocabulary's size."""
    from tokenizers import Tokenizer

    from sentencepiece_vocab import save_kind

    kinds = {kind: save_kind(vocabulary, kind, tmp_path_factory.mktemp(kind)) for kind in ("llama2", "gemma")}
    return kinds, Tokenizer.from_file(str(kinds["llama2"])).get_vocab_size()


def save_model(folder, config, tokenizer_json):
    """A tiny random transformers model beside `tokenizer_json` and its tokenizer_config.json (which names </s>)."""
    save_tiny(folder, config, tokenizer_json)
    shutil.copyfile(tokenizer_json.parent / "tokenizer_config.json", folder / "tokenizer_config.json")
    return folder


def round_trip(folder, path, family: str, **transformers_config):
    """Convert at f32; the file's model has the source's logits in gptlab and transformers, and its tokenizer
    the source's ids and begin/end tokens."""
    assert "tensors: " in convert(folder, path, "--quant", "f32")
    source, back = load_model(str(folder)), load_model(str(path))
    assert back.model.config.family == family
    expected = logits(source.model, IDS)
    assert (logits(back.model, IDS) - expected).abs().max().item() < 1e-5
    theirs = logits(transformers_gguf(path, **transformers_config), IDS) - logits(transformers_folder(folder), IDS)
    assert theirs.abs().max().item() < 1e-5
    for text in TEXTS:
        assert back.tokenizer.encode(text) == source.tokenizer.encode(text), text
    ends = [(t.bos_id, t.eos_id, t.adds_bos) for t in (back.tokenizer, source.tokenizer)]
    assert ends[0] == ends[1] and None not in ends[0]
    return back


def test_mistral_is_written_as_llama_and_a_window_is_refused(tokenizers, tmp_path):
    """llama.cpp runs Mistral as `llama` (q/k rows interleaved), which has no sliding window."""
    from transformers import MistralConfig

    kinds, vocab_size = tokenizers
    folder = save_model(tmp_path / "mistral", MistralConfig(**LLAMA_SHAPE, vocab_size=vocab_size, sliding_window=None),
                       kinds["llama2"])
    round_trip(folder, tmp_path / "mistral.gguf", "llama")
    windowed = save_model(tmp_path / "windowed", MistralConfig(**LLAMA_SHAPE, vocab_size=vocab_size, sliding_window=8),
                         kinds["llama2"])
    assert "attends over a sliding window of 8, which llama.cpp's llama does not" in refusal(
        windowed, tmp_path / "windowed.gguf")


def test_phi3_keeps_its_fused_tensors_and_window(tokenizers, tmp_path):
    """attn_qkv and ffn_up (gate then up) as Phi-3 fuses them; the window comes back in gptlab (wider than the
    prompt: transformers' GGUF reader does not read it)."""
    from transformers import Phi3Config

    kinds, vocab_size = tokenizers
    config = Phi3Config(**LLAMA_SHAPE, vocab_size=vocab_size, sliding_window=64, rope_theta=10000.0, pad_token_id=0)
    # transformers' reader keeps Phi3Config's pad id, 32,000, past this vocabulary
    back = round_trip(save_model(tmp_path / "phi3", config, kinds["llama2"]), tmp_path / "phi3.gguf", "phi3",
                      pad_token_id=0)
    assert back.model.config.sliding_window == 64


def test_gemma3_keeps_its_norms_and_scales(tokenizers, tmp_path):
    """Gemma's vocabulary without a space before the text; norms as 1 + w, post-norms, QK-norm, the window.
    Heads of 256: transformers' GGUF reader takes Gemma 3's default query_pre_attn_scalar (256)."""
    from transformers import Gemma3TextConfig

    kinds, vocab_size = tokenizers
    config = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
                              max_position_embeddings=128, sliding_window=64, rms_norm_eps=1e-6)
    back = round_trip(save_model(tmp_path / "gemma3", config, kinds["gemma"]), tmp_path / "gemma3.gguf", "gemma3")
    assert back.model.config.sliding_window == 64


def test_a_gemma3_unlike_llama_cpps_is_refused(tokenizers, tmp_path):
    """llama.cpp's gemma3 reads neither which blocks are windowed nor their rotary base from the file: a model
    that windows other blocks, with another local base, would run differently there."""
    from transformers import Gemma3TextConfig

    kinds, vocab_size = tokenizers
    config = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
                              sliding_window=64, layer_types=["sliding_attention", "full_attention"],
                              rope_local_base_freq=20000.0)
    line = refusal(save_model(tmp_path / "gemma3", config, kinds["gemma"]), tmp_path / "gemma3.gguf")
    assert ("differs from what llama.cpp's gemma3 assumes in which blocks attend over the window (five in six), "
            "the windowed blocks' rotary base (10000)") in line
