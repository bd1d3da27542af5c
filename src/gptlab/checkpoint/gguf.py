"""Llama-family models in GGUF files (llama.cpp's format), dequantized into our GPT.

Read with the `gguf` package; quantized tensors (Q4_1, Q8_0, ...) become float32. llama.cpp
stores q/k projection rows interleaved for its rotary kernel, so they are put back in the
"halves" order our RoPE (and Hugging Face's) uses. The tokenizer comes from the file too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gptlab.checkpoint.weights import build_model
from gptlab.config import GPTConfig
from gptlab.model import GPT
from gptlab.tokenizer.bytelevel import ByteLevelBPE, tokenizer_from_gguf

def load_gguf(path: str | Path, dtype: torch.dtype | None = torch.float32,
              source: dict[str, Any] | None = None) -> tuple[GPT, ByteLevelBPE]:
    """Our GPT and the file's tokenizer from a llama-architecture GGUF file."""
    from gguf import GGUFReader

    path = Path(path)
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: not a readable GGUF file ({err})") from err
    meta = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("tokenizer.ggml.")}
    names = {t.name for t in reader.tensors}
    config = _config(meta, str(path), tied="output.weight" not in names)
    if "rope_freqs.weight" in names or any(key.startswith("llama.rope.scaling") for key in meta):
        raise ValueError(f"{path}: scaled rotary embeddings (Llama 3.1 and later) are not supported")
    tensors = {t.name: _dequantized(t) for t in reader.tensors}
    model = build_model(config, _our_names(tensors, config), str(path), dtype)
    return model, tokenizer_from_gguf(reader, config.name, source or {"type": "gguf", "path": str(path.resolve())})


def _config(meta: dict[str, Any], source: str, tied: bool) -> GPTConfig:
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{source}: architecture {arch!r} is not supported; gptlab reads llama GGUF files")
    try:
        return GPTConfig(
            vocab_size=int(meta["llama.vocab_size"]), context_length=int(meta["llama.context_length"]),
            n_layer=int(meta["llama.block_count"]), n_head=int(meta["llama.attention.head_count"]),
            n_embd=int(meta["llama.embedding_length"]), n_kv_head=int(meta["llama.attention.head_count_kv"]),
            mlp_hidden=int(meta["llama.feed_forward_length"]), rope_theta=float(meta.get("llama.rope.freq_base", 1e4)),
            layer_norm_eps=float(meta["llama.attention.layer_norm_rms_epsilon"]), positions="rope",
            norm="rmsnorm", mlp="swiglu", bias=False, qkv_bias=False, tie_embeddings=tied,
            name=str(meta.get("general.name", "gguf")),
        )
    except KeyError as err:
        raise ValueError(f"{source}: missing metadata {err} of a llama model") from None


def _dequantized(tensor: Any) -> Tensor:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    if tensor.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        values = np.asarray(tensor.data, dtype=np.float32)
    else:
        values = dequantize(tensor.data, tensor.tensor_type)
    shape = [int(n) for n in reversed(tensor.shape.tolist())]  # ggml lists dimensions innermost first
    return torch.from_numpy(np.array(values.reshape(shape), dtype=np.float32))  # a writable copy


def _unpermute(weight: Tensor, heads: int) -> Tensor:
    """Undo llama.cpp's interleaving of rotary dimensions: rows (h, i, pair) → (h, pair, i)."""
    out, width = weight.shape
    return weight.reshape(heads, out // heads // 2, 2, width).transpose(1, 2).reshape(out, width)


def _our_names(tensors: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    state = {"wte.weight": tensors["token_embd.weight"], "ln_f.weight": tensors["output_norm.weight"]}
    if "output.weight" in tensors:
        state["lm_head.weight"] = tensors["output.weight"]
    for i in range(config.n_layer):
        blk = lambda name: tensors[f"blk.{i}.{name}.weight"]  # noqa: E731
        state.update({
            f"h.{i}.ln_1.weight": blk("attn_norm"),
            f"h.{i}.attn.c_attn.weight": torch.cat([_unpermute(blk("attn_q"), config.n_head),
                                                    _unpermute(blk("attn_k"), config.kv_heads), blk("attn_v")]),
            f"h.{i}.attn.c_proj.weight": blk("attn_output"),
            f"h.{i}.ln_2.weight": blk("ffn_norm"),
            f"h.{i}.mlp.c_fc.weight": torch.cat([blk("ffn_gate"), blk("ffn_up")]),
            f"h.{i}.mlp.c_proj.weight": blk("ffn_down"),
        })
    return state
