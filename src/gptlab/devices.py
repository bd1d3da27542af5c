"""Pick the compute device (CUDA, then Apple MPS, then CPU) and the weights' dtype, unless the user names them."""

from __future__ import annotations

import torch


def pick_device(name: str | None = None) -> torch.device:
    """The named device (validated), or the best one available when `name` is None/"auto"."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} requested but MPS is not available; use --device cpu")
    return device


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """The named dtype, or for None/"auto": bfloat16 on a GPU that supports it, else float32 (on CPU
    float32 is the safe default; bfloat16 halves the bytes read per token where the CPU has the kernels)."""
    if name in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]
