"""Mistral (Mistral AI, 2023): a Llama whose every block attends over a sliding window of keys
(4,096 in Mistral-7B v0.1; later versions set `sliding_window` to null, which is a plain Llama).

llama.cpp runs Mistral as its `llama` architecture, which has no window: a windowless Mistral is written
as a Llama GGUF file (and reads back as the llama family), a windowed one is refused."""

from __future__ import annotations

from typing import Any

from gptlab.config import GPTConfig
from gptlab.models import llama
from gptlab.models.family import Family, GGUFFormat, HFFormat, window_from_hf

PRESETS: dict[str, dict[str, Any]] = {
    "mistral-tiny": dict(vocab_size=50257, context_length=256, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                         mlp_hidden=128, sliding_window=16, tie_embeddings=False, **llama.BLOCKS),
    "mistral-7b-v0.1": dict(vocab_size=32000, context_length=32768, n_layer=32, n_head=32, n_kv_head=8, n_embd=4096,
                            mlp_hidden=14336, sliding_window=4096, tie_embeddings=False, **llama.BLOCKS),
}


def config_from_hf(hf: dict[str, Any], source: str) -> GPTConfig:
    """Our config from a `MistralForCausalLM` config.json."""
    return llama.config_from_hf(hf, source, "mistral", **window_from_hf(hf, hf.get("num_hidden_layers", 0)))


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """A config.json that `transformers.MistralForCausalLM` reads (a window in every block, or none)."""
    if config.sliding_layers is not None:
        raise ValueError("Mistral's window covers every block; this model windows only some of them")
    return {"architectures": ["MistralForCausalLM"], "model_type": "mistral", **llama.hf_fields(config),
            "sliding_window": config.sliding_window}


FAMILY = Family(
    name="mistral",
    vocabulary="file",
    hf=HFFormat(("mistral",), config_from_hf, config_to_hf, llama.hf_to_ours, llama.ours_to_hf),
    # llama.cpp's converter writes Mistral as `llama`; the llama family (listed first) reads such files
    gguf=GGUFFormat(("llama",), llama.config_from_gguf, llama.gguf_to_ours, llama.config_to_gguf,
                    llama.ours_to_gguf),
    presets=PRESETS,
)
