"""TensorFlow V2 checkpoints ("tensor bundles") read without TensorFlow.

A checkpoint `PREFIX` is `PREFIX.index`, a sorted table (see `sstable.py`) whose empty key holds a
`BundleHeaderProto` (shard count, endianness, format version) and whose other keys are variable
names with a `BundleEntryProto` each (dtype, shape, shard, byte offset and size, masked CRC-32C),
plus `PREFIX.data-SSSSS-of-NNNNN` files holding the raw little-endian C-order tensor bytes. The
protobuf messages are decoded by hand: five small messages do not justify generated code. The spec:
TensorFlow's `core/protobuf/tensor_bundle.proto` and `core/util/tensor_bundle/tensor_bundle.cc`.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptlab.checkpoint.crc32c import masked_crc32c, using_fast_crc32c
from gptlab.checkpoint.sstable import read_table, read_varint

log = logging.getLogger(__name__)

# TensorFlow's DataType enum (core/framework/types.proto) -> numpy, for the numeric types.
DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?",
          17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8"}
BIG_ENDIAN = 1  # BundleHeaderProto.Endianness
FORMAT_VERSION = 1  # kTensorBundleVersion: a bundle whose min_consumer is newer needs a newer reader
SLOW_VERIFY_BYTES = 64 << 20  # above this, checking without google-crc32c earns a warning


@dataclass(frozen=True)
class BundleEntry:
    """Where one tensor lives: dtype, shape, data file (shard), byte range and stored checksum."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int  # masked, as TensorFlow stores it


@dataclass(frozen=True)
class BundleIndex:
    """The decoded `.index` file: how many data files there are and every tensor's entry."""

    num_shards: int
    entries: list[BundleEntry]  # in the index's byte-sorted key order (h10 before h2)


def read_bundle(prefix: str | Path, verify: bool = True) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint at `prefix` (e.g. `folder/model.ckpt`), by variable name.

    The arrays are views of copy-on-write memory maps of the data files: nothing is read until
    used, no second copy is made, and writing to them never changes the files. `verify` checks
    each tensor's CRC-32C (fast with `google-crc32c`, about a minute per 500 MB without).
    """
    prefix = Path(prefix)
    index = read_index(Path(f"{prefix}.index"))
    paths = [data_path(prefix, shard, index.num_shards) for shard in range(index.num_shards)]
    shards = [_map(path, prefix) for path in paths]
    total = sum(entry.size for entry in index.entries)
    if verify and not using_fast_crc32c() and total > SLOW_VERIFY_BYTES:
        log.warning("checking %d MB of %s with pure-Python crc32c (about %d s); pip install google-crc32c "
                    "to make it instant, or skip the check", total >> 20, prefix, total / 10e6)
    return {entry.name: _tensor(entry, shards[entry.shard], paths[entry.shard], verify) for entry in index.entries}


def data_path(prefix: Path, shard: int, num_shards: int) -> Path:
    """The data file of one shard: `PREFIX.data-00000-of-00001`."""
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


def read_index(path: Path) -> BundleIndex:
    """The header and entries of a checkpoint's `.index` file; every problem names the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (a TensorFlow checkpoint needs its .index file)")
    table = read_table(path)
    if not table or table[0][0] != b"":
        raise ValueError(f"{path}: the first entry is not the bundle header; not a TensorFlow V2 checkpoint index")
    key, entries = b"", []
    try:
        num_shards = _header(table[0][1])
        for key, value in table[1:]:
            entries.append(_entry(key.decode("utf-8"), value, num_shards))
    except (ValueError, IndexError, struct.error, UnicodeDecodeError) as err:
        where = f"entry {key.decode('utf-8', 'replace')!r}" if key else "the header"
        raise ValueError(f"{path}: {where} is not a valid tensor bundle record ({err})") from err
    return BundleIndex(num_shards, entries)


def _header(value: bytes) -> int:
    """The shard count from a BundleHeaderProto, after checking endianness and version."""
    fields = dict(proto_fields(value))
    if _number(fields, 2) == BIG_ENDIAN:
        raise ValueError("the checkpoint was written on a big-endian machine; gptlab reads little-endian ones")
    min_consumer = _number(dict(proto_fields(_message(fields, 3))), 2)
    if min_consumer > FORMAT_VERSION:
        raise ValueError(f"it needs a reader of bundle format {min_consumer}; gptlab reads format {FORMAT_VERSION}")
    num_shards = _number(fields, 1)
    if num_shards < 1:
        raise ValueError(f"it claims {num_shards} data files")
    return num_shards


def _entry(name: str, value: bytes, num_shards: int) -> BundleEntry:
    """A BundleEntryProto: dtype 1, shape 2, shard_id 3, offset 4, size 5, crc32c 6, slices 7."""
    fields: dict[int, int | bytes] = {}
    dims: list[int] = []
    for number, field in proto_fields(value):
        fields[number] = field
        if number == 7:
            raise ValueError("it is a partitioned (sliced) variable, which gptlab does not read")
    for number, dim in proto_fields(_message(fields, 2)):  # TensorShapeProto: repeated Dim dim = 2
        if number != 2:
            continue
        if not isinstance(dim, bytes):
            raise ValueError("a shape dimension holds a number where a message belongs")
        dims.append(_signed(_number(dict(proto_fields(dim)), 1)))
    dtype, shard = _number(fields, 1), _number(fields, 3)
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype} (TensorFlow's DataType enum) is not a numeric type gptlab reads")
    if any(d < 0 for d in dims):
        raise ValueError(f"shape {dims} has an unknown dimension")
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is not one of the {num_shards} data files")
    entry = BundleEntry(name, np.dtype(DTYPES[dtype]), tuple(dims), shard, _number(fields, 4), _number(fields, 5),
                        _number(fields, 6))
    if entry.size != math.prod(entry.shape) * entry.dtype.itemsize:
        raise ValueError(f"{entry.size} bytes cannot hold a {entry.dtype} tensor of shape {entry.shape}")
    return entry


def proto_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs of a protobuf message: ints for varint and fixed fields, bytes
    for length-delimited ones (sub-messages, strings)."""
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        value: int | bytes
        if wire_type == 0:
            value, pos = read_varint(buf, pos)
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            (value,) = struct.unpack_from("<Q" if size == 8 else "<I", buf, pos)
            pos += size
        elif wire_type == 2:
            length, pos = read_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError(f"field {number} runs past the end of its message")
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise ValueError(f"field {number} has wire type {wire_type}, which bundle messages never use")
        yield number, value


def _number(fields: dict[int, int | bytes], number: int) -> int:
    """A varint or fixed field of a message, 0 when absent (protobuf's default)."""
    value = fields.get(number, 0)
    if not isinstance(value, int):
        raise ValueError(f"field {number} holds bytes where a number belongs")
    return value


def _message(fields: dict[int, int | bytes], number: int) -> bytes:
    """A length-delimited field of a message (a sub-message), empty when absent."""
    value = fields.get(number, b"")
    if not isinstance(value, bytes):
        raise ValueError(f"field {number} holds a number where a message belongs")
    return value


def _signed(value: int) -> int:
    """An int64 field as signed: protobuf writes negatives as 10-byte two's-complement varints."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _map(path: Path, prefix: Path) -> np.ndarray:
    """The whole data file as bytes, memory-mapped copy-on-write (never written back)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the checkpoint {prefix.name} keeps its tensors there")
    if path.stat().st_size == 0:  # mmap refuses empty files
        return np.zeros(0, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="c")


def _tensor(entry: BundleEntry, shard: np.ndarray, path: Path, verify: bool) -> np.ndarray:
    raw = shard[entry.offset : entry.offset + entry.size]
    if len(raw) != entry.size:
        raise ValueError(
            f"{path}: tensor {entry.name!r} lies at bytes [{entry.offset}, {entry.offset + entry.size}) but the "
            f"file has {len(shard)} bytes; it is truncated (an interrupted download or copy?)"
        )
    if verify and masked_crc32c(raw.data) != entry.crc32c:
        raise ValueError(
            f"{path}: tensor {entry.name!r} fails its crc32c check: the file is corrupt; download it again"
        )
    return raw.view(entry.dtype).reshape(entry.shape)
