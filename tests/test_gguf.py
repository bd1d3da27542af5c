"""The built-in SmolLM2 (real weights, GGUF Q4_1) against `transformers`' own reading of the same file."""

from __future__ import annotations

import json

import pytest
import torch

from gptlab.checkpoint import load_model
from gptlab.files import builtin_model_path, fetch


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2")


@pytest.fixture(scope="module")
def reference_tokenizer():
    """HF's BPE on the file's vocabulary, with SmolLM2's published pre-tokenizer (each digit alone, then
    GPT-2's byte-level split). transformers' GGUF reader leaves the digit rule out, which changes how a
    run of spaces before a digit splits."""
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    path = builtin_model_path("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return tokenizer


def test_logits_equal_transformers_reading_the_same_gguf(smollm2):
    from transformers import AutoModelForCausalLM

    path = builtin_model_path("smollm2")
    theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    ids = torch.tensor([smollm2.tokenizer.encode("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n")])
    with torch.no_grad():
        assert torch.allclose(smollm2.model(ids), theirs(ids).logits, atol=2e-4)
    config = smollm2.model.config
    assert (config.n_layer, config.n_head, config.kv_heads, config.n_embd, config.vocab_size) == (30, 9, 3, 576, 49152)
    assert 134e6 < smollm2.model.num_parameters() < 135e6


def test_tokenizer_is_byte_exact_with_hf_on_real_text_and_edge_cases(smollm2, reference_tokenizer):
    records = json.loads(fetch("instruction-data").read_text())
    texts = [fetch("the-verdict").read_text(encoding="utf-8"),
             *(r["instruction"] + "\n" + r["input"] + "\n" + r["output"] for r in records[:300]),
             "a  1", "x\n\n  99 bottles", "  42", "3.14159 and 2,718", "naïve café, 東京 ½ ²", "tabs\t\t7\tend", "don't I'll"]
    for text in texts:
        assert smollm2.tokenizer.encode(text) == reference_tokenizer.encode(text, add_special_tokens=False), text[:60]
        assert smollm2.tokenizer.decode(smollm2.tokenizer.encode(text)) == text
    specials = smollm2.tokenizer.encode("<|im_start|>user\nHi<|im_end|>")
    assert specials[0] == 1 and specials[-1] == 2 == smollm2.tokenizer.eos_id
