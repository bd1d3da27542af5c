"""CRC-32C (Castagnoli), the checksum TensorFlow and LevelDB store, masked as they store it.

The `google-crc32c` package (`pip install gptlab[tf]`) checksums at about 12 GB/s; without it a
table-driven pure-Python loop does the same work at about 10-16 MB/s (`python benchmarks/crc32c.py`):
about 50 s for the 124M model's 498 MB and 10 minutes for 1558M, which is why callers may skip it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

MASK_DELTA = 0xA282EAD8
_POLY = 0x82F63B78  # Castagnoli, bit-reversed
_CHUNK = 1 << 20  # google-crc32c takes bytes only, so large buffers go through in 1 MiB copies


def masked_crc32c(data: memoryview | bytes) -> int:
    """The masked CRC-32C of `data`, as stored in TensorFlow checkpoints and LevelDB tables."""
    return mask(crc32c(data))


def mask(crc: int) -> int:
    """Rotate right by 15 bits and add a constant: a CRC stored next to the data it covers is
    then not itself a likely CRC of data (TensorFlow's `crc32c::Mask`)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + MASK_DELTA) & 0xFFFFFFFF


def crc32c(data: memoryview | bytes) -> int:
    """The plain CRC-32C of `data`, with `google-crc32c` when installed."""
    view = memoryview(data).cast("B")
    extend = _fast_extend()
    if extend is None:
        return _python_crc32c(view)
    crc = 0
    for start in range(0, len(view), _CHUNK):
        crc = extend(crc, bytes(view[start : start + _CHUNK]))
    return crc


def using_fast_crc32c() -> bool:
    """Whether checksums run at memory speed (the C implementation of `google-crc32c`)."""
    return _fast_extend() is not None


@functools.cache
def _fast_extend() -> Callable[[int, bytes], int] | None:
    try:
        import google_crc32c
    except ImportError:
        return None
    return google_crc32c.extend if google_crc32c.implementation == "c" else None


@functools.cache
def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_POLY if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


def _python_crc32c(view: memoryview) -> int:
    table, crc = _table(), 0xFFFFFFFF
    for byte in view:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
