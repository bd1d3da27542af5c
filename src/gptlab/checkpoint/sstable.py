"""LevelDB's sorted table format, which TensorFlow uses for a checkpoint's `.index` file.

A table is data blocks of key/value entries, an index block whose values point at the data
blocks, a metaindex block (unused here) and a 48-byte footer: the two block handles (offset and
size as varints), zero padding, and the magic number. Every block is followed by a compression
byte and a masked CRC-32C of block + that byte. Keys inside a block share prefixes with the key
before them; the block ends with restart offsets (uint32 each) and their count, which a full scan
does not need. The spec: LevelDB's `doc/table_format.md`, TensorFlow's `core/lib/io/format.cc`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

from gptlab.checkpoint.crc32c import masked_crc32c

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two handles padded to 40 bytes, then the 8-byte magic
TRAILER_SIZE = 5  # compression type + masked crc32c after every block
NO_COMPRESSION = 0


def read_table(path: Path) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of the table in `path`, in file order; corruption names the file."""
    data = path.read_bytes()
    try:
        return list(_entries(data))
    except (ValueError, IndexError, struct.error) as err:
        raise ValueError(
            f"{path}: not a readable TensorFlow checkpoint index ({err}); it may be truncated (an "
            "interrupted download or copy) or another kind of file"
        ) from err


def _entries(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(data) < FOOTER_SIZE:
        raise ValueError(f"{len(data)} bytes is shorter than the {FOOTER_SIZE}-byte footer")
    footer = data[-FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)
    if magic != MAGIC:
        raise ValueError(f"its last 8 bytes are not the table magic number {MAGIC:#x}")
    _metaindex, pos = read_handle(footer, 0)
    index, _ = read_handle(footer, pos)
    for _separator, handle in block_entries(read_block(data, index)):
        yield from block_entries(read_block(data, read_handle(handle, 0)[0]))


def read_handle(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    """A block handle (offset, size) at `pos`, and the position after it."""
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return (offset, size), pos


def read_block(data: bytes, handle: tuple[int, int]) -> bytes:
    """The contents of the block at `handle`, checked against its trailer."""
    offset, size = handle
    end = offset + size
    if end + TRAILER_SIZE > len(data):
        raise ValueError(f"the block at byte {offset} ({size} bytes) runs past the end of the file")
    compression = data[end]
    (stored,) = struct.unpack_from("<I", data, end + 1)
    if masked_crc32c(data[offset : end + 1]) != stored:
        raise ValueError(f"the block at byte {offset} fails its crc32c check")
    if compression != NO_COMPRESSION:
        raise ValueError(
            f"the block at byte {offset} is compressed (type {compression}); gptlab reads uncompressed "
            "tables, which is what TensorFlow writes for checkpoints"
        )
    return data[offset:end]


def block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) entries of one block, keys rebuilt from their shared prefixes."""
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 * (num_restarts + 1)
    if limit < 0:
        raise ValueError(f"a block of {len(block)} bytes claims {num_restarts} restart points")
    key, pos = b"", 0
    while pos < limit:
        shared, pos = read_varint(block, pos)
        unshared, pos = read_varint(block, pos)
        value_size, pos = read_varint(block, pos)
        if shared > len(key) or pos + unshared + value_size > limit:
            raise ValueError(f"a block entry at byte {pos} overruns its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_size]
        pos += value_size


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A base-128 varint (low groups first) at `pos`, and the position after it."""
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("a varint runs past the end of its buffer")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("a varint is longer than 10 bytes")
