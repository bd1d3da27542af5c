"""gptlab's own checkpoint folder: `model.safetensors` + `config.json` (model + tokenizer) + `manifest.json`.

No pickle anywhere: tensors are safetensors, everything else JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gptlab.checkpoint.manifest import write_manifest
from gptlab.checkpoint.meta import CheckpointMeta
from gptlab.checkpoint.weights import (
    build_model,
    check_state_dict,
    check_values,
    read_safetensors,
    state_to_save,
    write_safetensors,
)
from gptlab.config import GPTConfig
from gptlab.files import read_json
from gptlab.lora import apply_lora, is_lora_key, lora_state_dict, merge_lora
from gptlab.model import GPT
from gptlab.tokenizer import Tokenizer, tokenizer_from_dict
from gptlab.tokenizer.embedded import embedded

FORMAT = "gptlab"
FORMAT_VERSION = 1


def save_checkpoint(
    model: GPT, tokenizer: Tokenizer, folder: str | Path, meta: CheckpointMeta | None = None
) -> Path:
    """Write the checkpoint atomically: a half-written folder never replaces a good one."""
    folder = Path(folder)
    write_folder_atomically(folder, lambda tmp: write_model_files(model, tokenizer, tmp, meta))
    return folder


def write_model_files(
    model: GPT, tokenizer: Tokenizer, folder: Path, meta: CheckpointMeta | None = None, trained_only: bool = False
) -> None:
    """`model.safetensors` + `config.json` (model config, tokenizer, `meta`) into `folder`, and the files of
    a tokenizer read from a model file (its `tokenizer.json`), so the folder loads without that file.

    `trained_only` writes just the parameters that train (LoRA adapters, a new head): the rest
    is the base model that `meta.lora.base` names, loaded again when this one is.
    """
    state = state_to_save(model)
    if trained_only:
        state = {name: state[name] for name, param in model.named_parameters() if param.requires_grad}
    write_safetensors(state, folder / "model.safetensors")
    description, files = embedded(tokenizer)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    config = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "tokenizer": description,
        **(meta or CheckpointMeta()).to_dict(),
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def write_folder_atomically(folder: Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a temporary sibling folder, then swap it in place of `folder`.

    The steps: write `.NAME.tmp-*` and its `manifest.json` (the sha256 of each file, checked at
    every load); fsync its files and itself; rename it `.NAME.new-PID`
    (complete from here on); move the old `folder` aside as `.NAME.old-PID`; rename the new one
    into place; fsync the parent; delete the old one. A crash or error at any point leaves
    `folder` or a complete sibling that `recover_folder` puts back, never a half-written folder.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        try:
            write(tmp)
        except OSError as err:  # named as the user knows the file, not as its temporary sibling
            if err.filename is None or not Path(err.filename).is_relative_to(tmp):
                raise
            raise OSError(err.errno, err.strerror, str(folder / Path(err.filename).relative_to(tmp))) from err
        write_manifest(tmp)
        _apply_umask(tmp)
        _fsync_tree(tmp)
        ready = _sibling(folder, "new")
        shutil.rmtree(ready, ignore_errors=True)  # a leftover of an earlier process with this pid
        os.replace(tmp, ready)
        old = None
        if folder.exists():
            old = _sibling(folder, "old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(ready, folder)
        _fsync(folder.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        recover_folder(folder)
        raise


def recover_folder(folder: Path) -> str | None:
    """Finish or undo a swap a crash interrupted: a missing `folder` gets the newest complete
    sibling (`.new-*`, else `.old-*`); every other leftover is deleted. Returns what was done, for
    a log line, or None when there was nothing to do."""
    leftovers = sorted(folder.parent.glob(f".{folder.name}.*-*"), key=lambda p: p.stat().st_mtime)
    if not leftovers:
        return None
    done = f"removed {len(leftovers)} unfinished cop{'y' if len(leftovers) == 1 else 'ies'} of {folder}"
    if not folder.exists():
        complete = [p for kind in ("new", "old") for p in reversed(leftovers)
                    if p.name.startswith(f".{folder.name}.{kind}-")]
        if complete:
            os.replace(complete[0], folder)
            _fsync(folder.parent)
            done = f"restored {folder} from {complete[0].name}, which a crash left beside it"
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return done


def _sibling(folder: Path, kind: str) -> Path:
    return folder.with_name(f".{folder.name}.{kind}-{os.getpid()}")


def _fsync_tree(folder: Path) -> None:
    """Flush every file of `folder` and the folder itself to disk, so a power loss after the
    rename cannot leave the renamed folder with empty files."""
    for path in folder.iterdir():
        if path.is_file():
            _fsync(path)
    _fsync(folder)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _apply_umask(folder: Path) -> None:
    """mkdtemp and some writers create owner-only files; give them the usual permissions."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def read_checkpoint_config(folder: Path) -> tuple[dict[str, Any], CheckpointMeta]:
    """A gptlab checkpoint's config.json and its record (task, LoRA base), checked; errors name the file."""
    path = folder / "config.json"
    meta = read_json(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a gptlab checkpoint (no \"format\": \"gptlab\")")
    return meta, CheckpointMeta.from_dict(meta, str(path))


def load_checkpoint(
    folder: str | Path, dtype: torch.dtype | None = None, base: dict[str, Tensor] | None = None
) -> tuple[GPT, Tokenizer, CheckpointMeta]:
    """Model, tokenizer and the rest of config.json from a folder written by `save_checkpoint`.

    `base` supplies the weights a LoRA checkpoint left out (those of the model it adapted).
    """
    folder = Path(folder)
    meta, record = read_checkpoint_config(folder)
    config = GPTConfig.from_dict(meta.get("model"), f"{folder / 'config.json'}, model")
    try:
        tokenizer = tokenizer_from_dict(meta["tokenizer"], folder)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{folder / 'config.json'}: invalid gptlab checkpoint config ({err})") from err
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing (the checkpoint folder is incomplete)")
    if config.num_classes is not None and base is not None:  # a class head replaced the base's LM head
        base = {k: v for k, v in base.items() if not k.startswith("lm_head.")}
    state = {**(base or {}), **read_safetensors(weights)}
    adapters = {key: state.pop(key) for key in [k for k in state if is_lora_key(k)]}
    if record.lora is not None and record.quantization is not None:
        raise ValueError(f"{folder / 'config.json'}: records both LoRA adapters and quantized weights; adapters "
                         "train on a float base: quantize the merged model instead (gptlab convert --quantize)")
    model = build_model(config, state, str(weights), dtype, record.quantization)
    if record.lora is not None:  # a LoRA run's checkpoint: base weights + adapters, merged for use
        apply_lora(model, record.lora, torch.Generator())  # the file's adapters replace the draws
        check_state_dict({k: v.shape for k, v in lora_state_dict(model).items()}, adapters, str(weights))
        check_values(adapters, str(weights))
        model.load_state_dict(adapters, strict=False)
        merge_lora(model).requires_grad_(True)
    elif adapters:
        raise ValueError(f"{weights}: holds LoRA adapters but {folder / 'config.json'} has no \"lora\" settings")
    return model, tokenizer, record
