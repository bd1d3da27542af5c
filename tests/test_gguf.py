"""The built-in SmolLM2 (real weights, GGUF Q4_1) against `transformers`' own reading of the same file."""

from __future__ import annotations

import pytest
import torch

from gptlab.files import builtin_model_path
from gptlab.loading import load_model
from hf_models import smollm2_hf_tokenizer, tokenizer_texts


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2")


@pytest.fixture(scope="module")
def reference_tokenizer():
    """HF's BPE on the file's vocabulary, with SmolLM2's published pre-tokenizer."""
    return smollm2_hf_tokenizer()


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
    for text in tokenizer_texts():
        assert smollm2.tokenizer.encode(text) == reference_tokenizer.encode(text, add_special_tokens=False), text[:60]
        assert smollm2.tokenizer.decode(smollm2.tokenizer.encode(text)) == text
    specials = smollm2.tokenizer.encode("<|im_start|>user\nHi<|im_end|>")
    assert specials[0] == 1 and specials[-1] == 2 == smollm2.tokenizer.eos_id


def test_a_byte_level_vocabulary_without_merges_is_one_clear_error(tmp_path):
    import gguf

    from gptlab.tokenizer.bytelevel import gguf_tokenizer

    path = tmp_path / "no-merges.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["a", "b", "ab"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match=r"no-merges.gguf: a byte-level BPE vocabulary \(tokenizer.ggml.model gpt2\) "
                                         r"needs tokenizer.ggml.merges, tokenizer.ggml.token_type, which this file "
                                         r"lacks"):
        gguf_tokenizer({"type": "gguf", "path": str(path)})
