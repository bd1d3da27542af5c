"""Which parameters a fine-tune trains: all, the last K blocks, or LoRA adapters."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch

from gptlab.checkpoint.fingerprint import weights_digest
from gptlab.loading import checkpoint_of
from gptlab.lora import LoRASettings, apply_lora
from gptlab.model import GPT


def choose_trainable(model: GPT, train_layers: str, lora: LoRASettings | None = None,
                     generator: torch.Generator | None = None) -> LoRASettings | None:
    """Freeze what `train_layers` leaves out; return the LoRA settings to save with the model, if any.

    `all`; `last` (= last-1) or `last-K`: the last K blocks, the final norm and the head; `lora`:
    `lora`'s adapters (default rank 8) on every block's projections, the weights frozen (a class head,
    being new, trains in full).
    """
    if train_layers == "all":
        model.requires_grad_(True)
        return None
    if train_layers == "lora":
        settings = apply_lora(model, lora or LoRASettings(), generator)
        if model.config.num_classes is not None:
            model.lm_head.requires_grad_(True)
        return settings
    match = re.fullmatch(r"last(?:-(\d+))?", train_layers)
    if not match:
        raise ValueError(f"--train-layers {train_layers!r}: expected all, lora, last or last-K (e.g. last-2)")
    count = int(match[1] or 1)
    if not 1 <= count <= model.config.n_layer:
        raise ValueError(f"--train-layers {train_layers}: the model has {model.config.n_layer} blocks")
    model.requires_grad_(False)
    for module in [*model.h[-count:], model.ln_f, model.lm_head]:
        module.requires_grad_(True)
    return None


def pinned_to_base(lora: LoRASettings | None, base: str) -> LoRASettings | None:
    """What a LoRA run's checkpoints record: the adapters' settings and the base to load them onto;
    None without LoRA. A folder is recorded as the absolute path of the very checkpoint used (a
    run's `best/` now), so the checkpoint loads from anywhere, with its weights' sha256, so it never
    loads onto whatever that path holds later."""
    if lora is None:
        return None
    pinned = str(checkpoint_of(Path(base).resolve())) if Path(base).exists() else base
    return dataclasses.replace(lora, base=pinned, base_sha256=weights_digest(pinned))
