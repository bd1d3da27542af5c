"""`gptlab convert SRC OUT.gguf --to gguf` for the families beyond Llama's and GPT-2's: each tiny random model
reads back through gptlab's GGUF reader with the source's logits, and through transformers' (`gguf_file=`)
where transformers reads that architecture (qwen3moe; not gptneox).

Tiny models with SmolLM2's first 1,024 tokens (the `small_tokenizer_json` fixture)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from e2e.test_cli_gguf_export import IDS, convert, logits, refusal, transformers_folder, transformers_gguf
from family_checks import save_tiny
from gptlab.config import Experts
from gptlab.loading import load_model

VOCAB = 1024
# transformers' GGUF reader ignores qwen3moe.expert_feed_forward_length and keeps Qwen3MoeConfig's default
# moe_intermediate_size, 768: the experts are that wide here so that it reads the file
QWEN3_MOE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, moe_intermediate_size=768,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_experts=4,
                 num_experts_per_tok=2, norm_topk_prob=True, max_position_embeddings=128, rms_norm_eps=1e-5,
                 tie_word_embeddings=False, rope_theta=1e6)
GPT_NEOX = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=128, layer_norm_eps=1e-5, rotary_pct=0.25, rotary_emb_base=10000,
                tie_word_embeddings=False)  # heads of 16, 4 dimensions rotating


def difference(model, expected: torch.Tensor) -> float:
    return (logits(model, IDS) - expected).abs().max().item()


def test_qwen3_moe_gguf_has_the_sources_logits_in_gptlab_and_transformers(tmp_path, small_tokenizer_json):
    """llama.cpp's expert stacks (E, out, in) and its keys for the experts; a mixture that does not
    renormalise its chosen experts' weights is refused (llama.cpp's qwen3moe always does)."""
    from transformers import Qwen3MoeConfig

    folder = save_tiny(tmp_path / "moe", Qwen3MoeConfig(**QWEN3_MOE), small_tokenizer_json)
    path = tmp_path / "moe.gguf"
    assert "(qwen3moe; tensors: " in convert(folder, path, "--quant", "f32")
    expected = logits(transformers_folder(folder), IDS)
    back = load_model(str(path)).model
    assert (back.config.family, back.config.experts, back.config.head_dim) == (
        "qwen3_moe", Experts(4, 2, 768, normalize=True), 32)
    assert difference(back, expected) < 1e-5
    assert difference(transformers_gguf(path), expected) < 1e-5
    unnormalised = save_tiny(tmp_path / "unnormalised", Qwen3MoeConfig(**{**QWEN3_MOE, "norm_topk_prob": False,
                                                                          "moe_intermediate_size": 32}),
                             small_tokenizer_json)
    assert "llama.cpp's qwen3moe always renormalises" in refusal(unnormalised, tmp_path / "refused.gguf")


@pytest.mark.parametrize("parallel", [True, False])
def test_gpt_neox_gguf_has_the_sources_logits(parallel, tmp_path, small_tokenizer_json):
    """q/k/v stacked all-q, all-k, all-v as llama.cpp's converter regroups them, a quarter of each head rotating,
    parallel and sequential residuals. transformers has no gptneox GGUF reader: gptlab's reads it back."""
    from transformers import GPTNeoXConfig

    folder = save_tiny(tmp_path / "neox", GPTNeoXConfig(**GPT_NEOX, use_parallel_residual=parallel),
                       small_tokenizer_json)
    path = tmp_path / "neox.gguf"
    assert "(gptneox; tensors: " in convert(folder, path, "--quant", "f32")
    source = load_model(str(folder)).model
    back = load_model(str(path)).model
    assert replace(back.config, layer_norm_eps=1e-5) == source.config  # GGUF keeps float32
    assert difference(back, logits(source, IDS)) < 1e-5
    assert difference(back, logits(transformers_folder(folder), IDS)) < 1e-4

