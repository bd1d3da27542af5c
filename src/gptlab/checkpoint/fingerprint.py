"""The sha256 of the weights a LoRA checkpoint was trained on, so its adapters never meet other weights.

A LoRA checkpoint keeps only its adapters and names its base by path (often another run's
`checkpoints/best`). That path can later hold something else: the base run resumed and saved a new
best, a folder overwritten by a new download. Merged onto those weights the adapters produce a model
nobody trained, and nothing would say so; the digest recorded at training time makes it one clear line.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from gptlab.checkpoint.manifest import TRAINING_STATE
from gptlab.lora import LoRASettings

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".pth", ".bin")
_CHUNK = 1 << 22


def weights_digest(spec: str) -> str | None:
    """The sha256 of the weight files `spec` loads from: the file itself, or a folder's weight files
    (safetensors shards, an OpenAI folder's `model.ckpt.data-*`; not a training checkpoint's optimizer
    state, which a resumed base run rewrites) read one after the other by name. None
    for a spec that is no file or folder (a preset's seeded weights, a built-in model, a hub name)."""
    path = Path(spec).expanduser()
    files = [path] if path.is_file() else sorted(filter(_holds_weights, path.iterdir())) if path.is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _holds_weights(path: Path) -> bool:
    """A model's weight file; a training checkpoint's optimizer and RNG state (also safetensors) are not."""
    return path.is_file() and path.name not in TRAINING_STATE and (
        path.suffix in WEIGHT_SUFFIXES or path.name.startswith("model.ckpt.data"))


def check_lora_base(lora: LoRASettings, where: Path) -> None:
    """Refuse, in one line, to put the adapters that `where` (a checkpoint's config.json) records onto a
    base whose weights are not the ones they were trained on. A checkpoint written before digests were
    recorded (or on a preset) has none to compare, and loads as before."""
    if lora.base is None or lora.base_sha256 is None:
        return
    found = weights_digest(lora.base)
    if found != lora.base_sha256:
        now = "has no weight files now" if found is None else f"now has weights with sha256 {found[:12]}…"
        raise ValueError(f"{where}: the LoRA base {lora.base} {now}, but the adapters were trained on "
                         f"{lora.base_sha256[:12]}…; put that base back, or train the adapters again on this one")
