"""Language-model data: texts → one token stream (cached as a memmap) → training windows.

A batch is a pure function of its index, so resuming a run (or sharding it across DDP ranks)
needs nothing but the step number.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gptlab.data.order import EpochOrder
from gptlab.data.reading import read_utf8
from gptlab.files import REGISTRY, cache_dir, fetch
from gptlab.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def resolve_text(source: str) -> Path:
    """A registry name (`the-verdict`, `tinyshakespeare`, ...) or a path to a text file."""
    if source in REGISTRY:
        return fetch(source)
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{source}: no such text file, and not a registered data set "
            f"(known: {', '.join(n for n in REGISTRY if REGISTRY[n].filename.endswith('.txt'))})"
        )
    return path


def token_stream(sources: list[str], tokenizer: Tokenizer) -> np.ndarray:
    """All sources tokenized and joined (EOS between documents when the tokenizer has one).

    Cached as a uint16/uint32 memmap keyed by the texts' content and the tokenizer, so large
    corpora are tokenized once.
    """
    paths = [resolve_text(s) for s in sources]
    key = hashlib.sha256(json.dumps(tokenizer.to_dict(), sort_keys=True).encode())
    for path in paths:
        key.update(hashlib.sha256(path.read_bytes()).digest())
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    cached = cache_dir() / "tokens" / f"{key.hexdigest()[:24]}.{np.dtype(dtype).name}"
    if cached.is_file():
        return np.memmap(cached, dtype=dtype, mode="r")
    ids: list[int] = []
    for path in paths:
        text = read_utf8(path)
        if not text:
            raise ValueError(f"{path}: the file is empty; give a text file with something to read")
        ids.extend(tokenizer.encode(text))
        if tokenizer.eos_id is not None and len(paths) > 1:
            ids.append(tokenizer.eos_id)
    array = np.asarray(ids, dtype=dtype)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp-{os.getpid()}")
    array.tofile(tmp)
    os.replace(tmp, cached)
    log.info("tokenized %s: %d tokens (cached in %s)", ", ".join(sources), len(array), cached)
    return array


@dataclass
class WindowSampler:
    """Windows of `context_length + 1` tokens: inputs are the first T, targets the last T.

    `mode="windows"` walks fixed windows `stride` apart in a seeded shuffled order per epoch
    (the book's data loader, for small texts); `mode="random"` takes windows at seeded random
    offsets (nanoGPT, for large texts).
    """

    tokens: np.ndarray
    context_length: int
    batch_size: int
    mode: str = "windows"
    stride: int | None = None  # default: context_length (no overlap)
    seed: int = 0
    shuffle: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("windows", "random"):
            raise ValueError(f"sampling mode must be 'windows' or 'random', got {self.mode!r}")
        need = self.context_length + 1
        if len(self.tokens) < need:
            raise ValueError(
                f"text too short: {len(self.tokens)} tokens, but one training window needs "
                f"context_length + 1 = {need}; use more text or a smaller --context-length"
            )
        stride = self.stride or self.context_length
        self.starts = np.arange(0, len(self.tokens) - need + 1, stride)
        self.order = EpochOrder(len(self.starts), self.seed, self.shuffle)

    @property
    def num_windows(self) -> int:
        return len(self.starts)

    def batch(self, index: int) -> tuple[Tensor, Tensor]:
        """Inputs and targets (B, T) of batch number `index` (any non-negative integer)."""
        if self.mode == "random":
            rng = np.random.default_rng([self.seed, index])
            starts = rng.integers(0, len(self.tokens) - self.context_length, size=self.batch_size)
        else:
            starts = self.starts[self.order.positions(index, self.batch_size)]
        rows = np.stack([self.tokens[s : s + self.context_length + 1] for s in starts]).astype(np.int64)
        rows_t = torch.from_numpy(rows)
        return rows_t[:, :-1], rows_t[:, 1:]


def split_tokens(tokens: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Train/val split by position (the last `val_fraction` of the stream is validation)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val fraction must be in (0, 1), got {val_fraction}")
    cut = int(len(tokens) * (1 - val_fraction))
    return tokens[:cut], tokens[cut:]
