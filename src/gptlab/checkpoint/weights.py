"""Shared weight-file plumbing: read safetensors with readable errors, check a state dict
against a model, and build a model on the meta device so loading never allocates twice.

A model loads in about its own size: each tensor is read into memory of its own (no memory map
that keeps the whole file resident beside the model), the family's fusing frees each file tensor
once stacked (`gptlab.models.family.stack_parts`), and a dtype change replaces one tensor at a
time (BENCHMARKS.md, "Loading a 1B model": 1.05x the weight bytes).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from gptlab.config import GPTConfig
from gptlab.files import read_json  # noqa: F401 (training.state reads run files through this name)
from gptlab.model import GPT
from gptlab.quantize import QUANTIZED_LAYERS, Quantization, is_quantized, quantize_model


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """All tensors of a .safetensors file, each read into memory of its own (`pread`, not a memory map:
    a mapped file's pages stay resident, and counted, while any tensor lives on it, beside every copy
    made from it); a truncated or foreign file gets a clear error."""
    try:
        with safe_open(str(path), framework="pt", backend="pread") as file:
            return {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"{path}: not a readable safetensors file ({err}); it may be truncated "
            "(an interrupted download or copy) or in another format"
        ) from err


def write_safetensors(tensors: dict[str, Tensor], path: Path) -> None:
    """`tensors` as a safetensors file at `path`. A failed write is the OSError it is, naming `path` (safetensors
    raises its own error, with the operating system's reason only in its text), so a full disk gets the same
    advice wherever it strikes; and the space left on that disk beside the space the file needs."""
    try:
        save_file(tensors, str(path), metadata={"format": "pt"})
    except SafetensorError as err:
        found = re.search(r"(?:code: |os error )(\d+)", str(err))
        if found is None:
            raise
        number = int(found[1])
        reason = os.strerror(number)
        if number == errno.ENOSPC:
            need = sum(tensor.nbytes for tensor in tensors.values())
            reason += f" ({_mb(shutil.disk_usage(path.parent).free)} free there, the file needs {_mb(need)})"
        raise OSError(number, reason, str(path)) from err


def _mb(size: int) -> str:
    return f"{size / 2**20:,.1f} MB"


def check_state_dict(expected: dict[str, torch.Size], found: dict[str, Tensor], source: str) -> None:
    """Raise one readable error listing missing/unexpected keys and shape mismatches."""
    problems = []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing:
        problems.append(f"missing key(s): {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected key(s): {_some(unexpected)}")
    for key in expected.keys() & found.keys():
        if tuple(found[key].shape) != tuple(expected[key]):
            problems.append(
                f"{key}: the file has shape {tuple(found[key].shape)}, the model expects "
                f"{tuple(expected[key])}"
            )
    if problems:
        raise ValueError(
            f"{source}: weights do not fit the model: " + "; ".join(problems)
            + ". Likely cause: the config does not match the weights (a different n_layer, "
            "n_embd, n_head, vocab_size or context_length), or the file belongs to another model."
        )


def check_values(state: dict[str, Tensor], source: str, integer_keys: frozenset[str] = frozenset()) -> None:
    """Refuse weights a model cannot compute with: integers (a cast would silently invent a model)
    and NaN or infinite values (a diverged run or a damaged file, found here rather than at sampling).
    `integer_keys` are a quantized model's integer weights, integers by design."""
    for key, tensor in state.items():
        if key in integer_keys:
            continue
        if not tensor.is_floating_point():
            raise ValueError(f"{source}: tensor {key} holds {str(tensor.dtype).removeprefix('torch.')} values, not "
                             "floating point weights; the file is damaged or was not written for a model: convert "
                             "it to float32, float16 or bfloat16")
        if not _finite(tensor):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"{source}: tensor {key} holds {bad:,} NaN or infinite values of {tensor.numel():,}; "
                             "the weights are damaged (a diverged run or a bad conversion): use an earlier checkpoint")


def _finite(tensor: Tensor) -> bool:
    """No NaN or infinity in `tensor`: its least and greatest values are finite (a NaN makes both NaN).
    One reduction, without the bool copy of `isfinite(tensor).all()` and 30x faster on a 1B model."""
    return tensor.numel() == 0 or all(torch.isfinite(value) for value in torch.aminmax(tensor))


def _some(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def skeleton(config: GPTConfig, quantization: Quantization | None = None) -> GPT:
    """A GPT with `config` on the meta device (nothing allocated), its layers quantized as `quantization` says."""
    with torch.device("meta"):
        model = GPT(config)
    return model if quantization is None else quantize_model(model, quantization, skeleton=True)


def expected_shapes(config: GPTConfig, quantization: Quantization | None = None) -> dict[str, torch.Size]:
    """Parameter names and shapes of a GPT with `config`, without allocating it."""
    model = skeleton(config, quantization)
    return {k: v.shape for k, v in model.state_dict().items() if k not in tied_keys(config)}


def tied_keys(config: GPTConfig) -> set[str]:
    """Keys that are views of another parameter and therefore not stored in files."""
    return {"lm_head.weight"} if config.head_is_tied else set()


def build_model(
    config: GPTConfig, state: dict[str, Tensor], source: str, dtype: torch.dtype | None = None,
    quantization: Quantization | None = None,
) -> GPT:
    """Create a GPT on the meta device and adopt `state` (checked first) without copying; with
    `quantization`, `state` holds a quantized model's integer weights, adopted as they are.
    A `dtype` change replaces `state`'s tensors in place."""
    model = skeleton(config, quantization)
    kept = _quantized_keys(model)  # integer weights and their scales: the kernels' dtypes, never cast
    check_state_dict(expected_shapes(config, quantization), state, source)
    check_values(state, source, frozenset(k for k in kept if not state[k].is_floating_point()))
    if dtype is not None:  # one tensor at a time, in place: the old dtype's copy goes as the new one comes
        for key in [k for k in state if k not in kept]:
            state[key] = state[key].to(dtype)
    model.load_state_dict(state, strict=not tied_keys(config), assign=True)
    if not is_quantized(model.lm_head):
        model.tie_weights()
    model.use_fast_weight_layout()
    return model.eval()


def _quantized_keys(model: GPT) -> set[str]:
    """State-dict keys of the quantized layers' integer weights and scales (a bias is an ordinary float)."""
    return {f"{name}.{key}" for name, module in model.named_modules() if isinstance(module, QUANTIZED_LAYERS)
            for key in module.state_dict() if key != "bias"}


def state_to_save(model: GPT) -> dict[str, Tensor]:
    """The model's tensors for a file: contiguous, tied views left out."""
    skip = tied_keys(model.config)
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if k not in skip}
