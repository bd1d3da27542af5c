"""Qwen3 (Alibaba, 2025), dense: a Llama with QK-norm (an RMSNorm over each head of the queries and the
keys, before rotation) and a head width of its own (Qwen3-0.6B: 16 heads of 128 in a 1,024-wide stream).

No biases, unlike Qwen2. The mixture-of-experts variant is `qwen3_moe.py`.
"""

from __future__ import annotations

from typing import Any

from gptlab.config import GPTConfig
from gptlab.models import llama, qwen2
from gptlab.models.family import ChatDefaults, Family, GGUFFormat, GGUFValue, HFFormat

BLOCKS = dict(qk_norm="head")  # what Qwen3 changes in a Llama
PRESETS: dict[str, dict[str, Any]] = {
    "qwen3-tiny": dict(vocab_size=50257, context_length=256, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                       head_size=32, mlp_hidden=128, rope_theta=1e6, layer_norm_eps=1e-6, tie_embeddings=True,
                       **llama.BLOCKS, **BLOCKS),  # for tests and pretraining on CPU, with GPT-2's vocabulary
    "qwen3-0.6b": dict(vocab_size=151936, context_length=40960, n_layer=28, n_head=16, n_kv_head=8, n_embd=1024,
                       head_size=128, mlp_hidden=3072, rope_theta=1e6, layer_norm_eps=1e-6, tie_embeddings=True,
                       **llama.BLOCKS, **BLOCKS),
}


def config_from_hf(hf: dict[str, Any], source: str) -> GPTConfig:
    """Our config from a `Qwen3ForCausalLM` config.json."""
    return llama.config_from_hf(hf, source, "qwen3", **BLOCKS, **qwen2.qwen_window(hf))


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """A config.json that `transformers.Qwen3ForCausalLM` reads."""
    return {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", **llama.hf_fields(config),
            **qwen2.qwen_window_to_hf(config)}


def config_from_gguf(meta: dict[str, Any], shapes: dict[str, tuple[int, ...]], source: str) -> GPTConfig:
    """Our config from a qwen3 GGUF file."""
    return llama.config_from_gguf(meta, shapes, source, "qwen3", "qwen3", **BLOCKS)


def config_to_gguf(config: GPTConfig) -> dict[str, GGUFValue]:
    """The `qwen3.…` metadata llama.cpp reads: Llama's keys (its QK-norm is the tensors' business)."""
    return llama.config_to_gguf(config, "qwen3")


FAMILY = Family(
    name="qwen3",
    vocabulary="file",
    hf=HFFormat(("qwen3",), config_from_hf, config_to_hf, llama.hf_to_ours, llama.ours_to_hf),
    # llama.cpp keeps Qwen3's q/k rows as Hugging Face has them (it rotates halves, "NEOX")
    gguf=GGUFFormat(("qwen3",), config_from_gguf, llama.gguf_halves_to_ours, config_to_gguf,
                    llama.ours_to_gguf_halves),
    presets=PRESETS,
    chat=ChatDefaults(prompt_style="chatml"),
)
