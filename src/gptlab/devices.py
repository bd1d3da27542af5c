"""Pick the compute device: CUDA, then Apple MPS, then CPU, unless the user names one."""

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
