"""Language-model data: texts → one token stream (cached as a memmap) → training windows.

A batch is a pure function of its index, so resuming a run (or sharding it across DDP ranks)
needs nothing but the step number.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gptlab.data.order import EpochOrder
from gptlab.data.reading import utf8_blocks
from gptlab.files import REGISTRY, cache_dir, fetch, sha256_of
from gptlab.tokenizer import Tokenizer, cuts_at_lines
from gptlab.tokenizer.chunks import last_line_start
from gptlab.tokenizer.embedded import fingerprint

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
    """All sources tokenized and joined (EOS after each document when there are several and the
    tokenizer has one), as a read-only memmap of uint16/uint32 ids.

    The ids are cached in a file keyed by the texts' bytes and the tokenizer (`fingerprint`), so a
    corpus is tokenized once and later runs map it in at no cost. Under `torchrun` the first process
    of each machine tokenizes and the others wait for its file.
    """
    paths = [resolve_text(s) for s in sources]
    key = hashlib.sha256(fingerprint(tokenizer).encode())
    for path in paths:
        key.update(bytes.fromhex(sha256_of(path)))
    dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32)
    cached = cache_dir() / "tokens" / f"{key.hexdigest()[:24]}.{dtype.name}"
    if not cached.is_file():
        if os.environ.get("LOCAL_RANK", "0") == "0":
            count = _write_tokens(paths, tokenizer, dtype, cached)
            log.info("tokenized %s: %d tokens (cached in %s)", ", ".join(sources), count, cached)
        else:
            _wait_for(cached)
    if cached.stat().st_size == 0:
        raise ValueError(f"{', '.join(sources)}: no tokens (the {tokenizer.name} tokenizer drops every character)")
    return np.memmap(cached, dtype=dtype, mode="r")


def _write_tokens(paths: list[Path], tokenizer: Tokenizer, dtype: np.dtype, cached: Path) -> int:
    """Tokenize the files a piece at a time into `cached` (written aside, then renamed into place,
    so a reader never sees half a file); returns the number of tokens. Memory holds one piece's ids."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f"{cached.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    count = 0
    try:
        with tmp.open("wb") as out:
            for path in paths:
                for piece in _pieces(path, cuts_at_lines(tokenizer)):
                    ids = np.asarray(tokenizer.encode(piece), dtype=dtype)
                    ids.tofile(out)
                    count += len(ids)
                if tokenizer.eos_id is not None and len(paths) > 1:
                    np.asarray([tokenizer.eos_id], dtype=dtype).tofile(out)
                    count += 1
        os.replace(tmp, cached)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def _pieces(path: Path, at_lines: bool) -> Iterator[str]:
    """The file's text in pieces that encode to the ids of the whole: cut at line starts when the tokenizer
    allows it (`cuts_at_lines`), else the whole text at once."""
    rest = ""
    for block in utf8_blocks(path):
        text = rest + block
        cut = last_line_start(text, len(rest) - 1) if at_lines else 0
        if cut:
            yield text[:cut]
        rest = text[cut:]
    if not rest:  # no text at all (a cut always leaves some text after it)
        raise ValueError(f"{path}: the file is empty; give a text file with something to read")
    yield rest


def _wait_for(cached: Path) -> None:
    """Wait for the first process on this machine to write the token cache (torchrun ends every worker
    if that one fails, so the wait cannot outlive it)."""
    log.info("waiting for local rank 0 to tokenize the data into %s", cached)
    while not cached.is_file():
        time.sleep(0.2)


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
