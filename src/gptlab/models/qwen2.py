"""Qwen2 and Qwen2.5 (Alibaba, 2024): a Llama whose query, key and value projections have biases.

Some Qwen2 configs turn on a sliding window for the blocks from `max_window_layers` up; the
published Qwen2.5 models leave it off. Everything else (names, rotary halves, tied small models)
is Llama's, so this file only says what differs. Qwen2, Qwen2.5 and Qwen3 share one tokenizer: Llama 3's
cut with every digit alone, after composing the text to Unicode NFC (its tokenizer.json's normalizer).
"""

from __future__ import annotations

from typing import Any

from gptlab.config import GPTConfig
from gptlab.models import llama
from gptlab.models.family import (
    ChatDefaults,
    Family,
    GGUFFormat,
    GGUFValue,
    HFFormat,
    regex_cut,
    window_from_hf,
    window_to_hf,
)

BLOCKS = dict(qkv_bias=True)  # what Qwen2 changes in a Llama
PRESETS: dict[str, dict[str, Any]] = {
    "qwen2-tiny": dict(vocab_size=50257, context_length=256, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                       mlp_hidden=128, rope_theta=1e6, layer_norm_eps=1e-6, **{**llama.BLOCKS, **BLOCKS}),
    "qwen2.5-0.5b": dict(vocab_size=151936, context_length=32768, n_layer=24, n_head=14, n_kv_head=2, n_embd=896,
                         mlp_hidden=4864, rope_theta=1e6, layer_norm_eps=1e-6, **{**llama.BLOCKS, **BLOCKS}),
}
QWEN2_SPLIT = regex_cut(  # Llama 3's cut with \p{N} where it has \p{N}{1,3}
    "qwen2", r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
             r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")


def config_from_hf(hf: dict[str, Any], source: str) -> GPTConfig:
    """Our config from a `Qwen2ForCausalLM` config.json."""
    return llama.config_from_hf(hf, source, "qwen2", **BLOCKS, **qwen_window(hf))


def qwen_window(hf: dict[str, Any]) -> dict[str, Any]:
    """Qwen's rule: with `use_sliding_window`, the blocks from `max_window_layers` up attend over the window."""
    n_layer = hf.get("num_hidden_layers", 0)
    if not hf.get("use_sliding_window") and "layer_types" not in hf:
        return window_from_hf({}, n_layer)
    return window_from_hf(hf, n_layer, list(range(hf.get("max_window_layers", n_layer), n_layer)))


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """A config.json that `transformers.Qwen2ForCausalLM` reads."""
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **llama.hf_fields(config),
            **qwen_window_to_hf(config)}


def qwen_window_to_hf(config: GPTConfig) -> dict[str, Any]:
    return {"use_sliding_window": config.sliding_window is not None, "max_window_layers": config.n_layer,
            **window_to_hf(config)}


def config_from_gguf(meta: dict[str, Any], shapes: dict[str, tuple[int, ...]], source: str) -> GPTConfig:
    """Our config from a qwen2 GGUF file."""
    return llama.config_from_gguf(meta, shapes, source, "qwen2", "qwen2", **BLOCKS)


def config_to_gguf(config: GPTConfig) -> dict[str, GGUFValue]:
    """The `qwen2.…` metadata llama.cpp reads: Llama's keys, with q/k/v biases."""
    return llama.config_to_gguf(config, "qwen2", qkv_bias=True)


FAMILY = Family(
    name="qwen2",
    vocabulary="file",
    hf=HFFormat(("qwen2",), config_from_hf, config_to_hf, llama.hf_to_ours, llama.ours_to_hf),
    # llama.cpp keeps Qwen2's q/k rows as Hugging Face has them (it rotates halves, "NEOX")
    gguf=GGUFFormat(("qwen2",), config_from_gguf, llama.gguf_halves_to_ours, config_to_gguf,
                    llama.ours_to_gguf_halves),
    presets=PRESETS,
    pre_tokenizers=(QWEN2_SPLIT,),  # Qwen3's too
    chat=ChatDefaults(prompt_style="chatml"),
)
