"""Training checkpoints: model files (written by the task) + optimizer + RNG + progress.

Like every folder gptlab writes, a checkpoint gets a `manifest.json` with the sha256 of its files
(`checkpoint.manifest`): loading the model checks the model's files, resuming checks them all, so a
corrupted or half-copied checkpoint is refused instead of silently training from garbage.
Nothing is pickled: tensors go to safetensors, the rest to JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from gptlab.checkpoint.manifest import TRAINING_STATE, verify_files
from gptlab.checkpoint.native import write_folder_atomically
from gptlab.checkpoint.weights import check_values, read_json, read_safetensors, tied_keys, write_safetensors
from gptlab.lora import is_lora_key

TENSORS, PROGRESS = TRAINING_STATE  # optimizer moments and RNG states; the Progress and param groups


@dataclass
class Progress:
    """Where a run stands: saved as `training.json` in each checkpoint, so a resumed run goes on exactly."""

    step: int = 0  # optimizer steps done
    tokens: int = 0  # tokens trained on
    lr: float = 0.0  # learning rate of the last step
    best_score: float = -math.inf  # of the evaluation `best/` holds (higher is better)
    best_val_loss: float = math.inf  # of that evaluation
    best_step: int | None = None  # its step
    evals_since_best: int = 0  # evaluations since, for early stopping
    elapsed: float = 0.0  # seconds of training up to the last evaluation, across resumes
    window_losses: list[float] = field(default_factory=list)  # training losses since the last evaluation
    evaluated_at: int = 0  # step of the last evaluation
    initial_val_loss: float | None = None  # before the first step (TrainSettings.eval_first)
    # metrics.jsonl as of this checkpoint: its length and sha256, so a resumed run goes on from those lines
    # exactly and refuses them damaged (None: a checkpoint written before gptlab recorded them)
    metrics_bytes: int | None = None
    metrics_sha256: str | None = None


def save_training_checkpoint(
    folder: Path,
    write_model: Callable[[Path], None],
    optimizer: torch.optim.Optimizer | None,
    progress: Progress,
    rng: torch.Tensor | None = None,
) -> None:
    """Write model (via `write_model`), optimizer, RNG (`rng`, default: the current state) and
    `progress` atomically into `folder`."""

    def write(tmp: Path) -> None:
        write_model(tmp)
        tensors = {"rng.cpu": rng if rng is not None else torch.get_rng_state()}
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        groups = None
        if optimizer is not None:
            opt_state = optimizer.state_dict()
            for index, slots in opt_state["state"].items():
                for name, value in slots.items():
                    tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
            groups = opt_state["param_groups"]
        write_safetensors(tensors, tmp / TENSORS)
        saved = {**dataclasses.asdict(progress), "param_groups": groups}
        (tmp / PROGRESS).write_text(json.dumps(saved, indent=2))

    write_folder_atomically(folder, write)


def load_training_state(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> Progress:
    """Restore model weights, optimizer and RNG from `folder`; return the saved progress."""
    verify_files(folder, hint="resume from another checkpoint or start again")
    weights = read_safetensors(folder / "model.safetensors")
    check_values(weights, str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = tied_keys(model.config) if hasattr(model, "config") else set()
    missing = set(missing) - tied
    if any(is_lora_key(name) for name in weights):  # a LoRA checkpoint holds what trains; the base is loaded
        missing -= {name for name, param in model.named_parameters() if not param.requires_grad}
    if missing or unexpected:
        raise ValueError(
            f"{folder}: checkpoint does not fit the model (missing {sorted(missing)[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    tensors = read_safetensors(folder / TENSORS)
    saved = read_json(folder / PROGRESS)
    if optimizer is not None and saved.get("param_groups") is not None:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                param = params[int(index)]
                if value.shape == param.shape:  # moments must share the parameter's memory layout:
                    value = torch.empty_like(param).copy_(value)  # fused AdamW walks raw memory
                state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return Progress(**{f.name: saved[f.name] for f in dataclasses.fields(Progress) if f.name in saved})
