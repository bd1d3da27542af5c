"""Phi-3 and Phi-4-mini (Microsoft, 2024-25): a Llama whose files keep q/k/v as one `qkv_proj` and
gate/up as one `gate_up_proj`, stacked in the order our `attn.c_attn` and `mlp.c_fc` stack them,
so import renames and never splits.

Where the config asks, only the first part of each head rotates (Phi-4-mini: `partial_rotary_factor`
0.75) and every block attends over a sliding window (Phi-3-mini-4k: 2,047 keys; transformers applies
it, so gptlab does too). The 128k-context models (Phi-3-*-128k, Phi-4-mini) stretch rotary positions
with "longrope", which gptlab refuses for now; their shape is a preset all the same.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from gptlab.config import GPTConfig
from gptlab.models import llama
from gptlab.models.family import (
    ChatDefaults,
    Family,
    GGUFFormat,
    GGUFValue,
    HFFormat,
    block_parts,
    rotary_fraction_from_hf,
    split_parts,
    stack_parts,
    window_from_hf,
)

if TYPE_CHECKING:
    from torch import Tensor

PRESETS: dict[str, dict[str, Any]] = {
    "phi3-tiny": dict(vocab_size=50257, context_length=256, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                      mlp_hidden=128, rotary_fraction=0.75, layer_norm_eps=1e-5, tie_embeddings=True,
                      **llama.BLOCKS),  # Phi-4-mini's blocks, for tests and pretraining on CPU (GPT-2's vocabulary)
    "phi-3-mini-4k": dict(vocab_size=32064, context_length=4096, n_layer=32, n_head=32, n_kv_head=32, n_embd=3072,
                          mlp_hidden=8192, sliding_window=2047, layer_norm_eps=1e-5, tie_embeddings=False,
                          **llama.BLOCKS),
    # Phi-4-mini at the 4,096 tokens it reaches without longrope (the published model stretches it to 131,072)
    "phi-4-mini": dict(vocab_size=200064, context_length=4096, n_layer=32, n_head=24, n_kv_head=8, n_embd=3072,
                       mlp_hidden=8192, rotary_fraction=0.75, layer_norm_eps=1e-5, tie_embeddings=True,
                       **llama.BLOCKS),
}
FUSED = ("q", "k", "v", "gate", "up")  # Llama's roles that Phi-3's files keep fused
HF_NAMES = {**{role: name for role, name in llama.HF_NAMES.items() if role not in FUSED},
            "qkv": "model.layers.{i}.self_attn.qkv_proj", "gate_up": "model.layers.{i}.mlp.gate_up_proj"}
# llama.cpp keeps the same fusion: attn_qkv, and ffn_up holding gate then up
GGUF_NAMES = {**{role: name for role, name in llama.GGUF_NAMES.items() if role not in FUSED},
              "qkv": "blk.{i}.attn_qkv", "gate_up": "blk.{i}.ffn_up"}
LONGROPE = "longrope (the rotary scaling of Phi-3's 128k-context models and Phi-4-mini) is not supported yet"


def config_from_hf(hf: dict[str, Any], source: str) -> GPTConfig:
    """Our config from a `Phi3ForCausalLM` config.json (its window, if any, covers every block)."""
    return llama.config_from_hf(hf, source, "phi3", rotary_fraction=rotary_fraction_from_hf(hf),
                                **window_from_hf(hf, hf.get("num_hidden_layers", 0)))


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """A config.json that `transformers.Phi3ForCausalLM` reads."""
    if config.sliding_layers is not None:
        raise ValueError("Phi-3's window covers every block; this model windows only some of them")
    return {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", **llama.hf_fields(config),
            "partial_rotary_factor": config.rotary_fraction, "sliding_window": config.sliding_window,
            "pad_token_id": None}  # Phi3Config's default pad id (32,000) is past a smaller vocabulary


def config_from_gguf(meta: dict[str, Any], shapes: dict[str, tuple[int, ...]], source: str) -> GPTConfig:
    """Our config from a phi3 GGUF file: Llama's keys under "phi3.", the rotating dimensions, the window
    (0: none). llama.cpp writes no vocabulary size for phi3: the embedding's rows give it. (llama.cpp
    itself currently ignores Phi-3's window; transformers, and so gptlab, apply it.)"""
    if "rope_factors_long.weight" in shapes:
        raise ValueError(f"{source}: {LONGROPE}")
    try:
        head_dim = int(meta["phi3.embedding_length"]) // int(meta["phi3.attention.head_count"])
        vocab_size = shapes["token_embd.weight"][0]
    except KeyError as err:
        raise ValueError(f"{source}: missing {err.args[0]!r} of a phi3 model") from None
    window = int(meta.get("phi3.attention.sliding_window", 0))
    return llama.config_from_gguf(
        {"phi3.vocab_size": vocab_size, **meta}, shapes, source, arch="phi3", family="phi3",
        rotary_fraction=int(meta.get("phi3.rope.dimension_count", head_dim)) / head_dim,
        sliding_window=window or None)


def gguf_to_ours(tensors: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Rename: llama.cpp keeps Phi-3's fused tensors as they are, q/k rows in "halves" order (no unpermute)."""
    return stack_parts(tensors, block_parts(config, GGUF_NAMES))


def config_to_gguf(config: GPTConfig) -> dict[str, GGUFValue]:
    """The `phi3.…` metadata llama.cpp's converter writes: Llama's keys, the rotating dimensions among them,
    the window (0: none) and the context the rotary positions were trained on."""
    if config.sliding_layers is not None:
        raise ValueError("Phi-3's window covers every block; this model windows only some of them")
    return {**llama.config_to_gguf(config, "phi3", window=True),
            "phi3.attention.sliding_window": config.sliding_window or 0,
            "phi3.rope.scaling.original_context_length": config.context_length}


def ours_to_gguf(state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Rename: llama.cpp keeps Phi-3's fused q/k/v and gate/up, q/k rows in "halves" order."""
    return split_parts(state, block_parts(config, GGUF_NAMES))


FAMILY = Family(
    name="phi3",
    vocabulary="file",
    hf=HFFormat(("phi3",), config_from_hf, config_to_hf, functools.partial(llama.hf_to_ours, names=HF_NAMES),
                functools.partial(llama.ours_to_hf, names=HF_NAMES)),
    gguf=GGUFFormat(("phi3",), config_from_gguf, gguf_to_ours, config_to_gguf, ours_to_gguf),
    presets=PRESETS,
    chat=ChatDefaults(prompt_style="phi3"),
)
