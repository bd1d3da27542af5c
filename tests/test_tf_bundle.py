"""gptlab's own TensorFlow checkpoint reader against files TensorFlow wrote (tests/fixtures/openai_gpt2)."""

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from gptlab.checkpoint import crc32c
from gptlab.checkpoint.sstable import MAGIC, read_handle, read_table
from gptlab.checkpoint.tf_bundle import read_bundle, read_index

FIXTURES = Path(__file__).parent / "fixtures" / "openai_gpt2"


def saved_arrays(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name / "arrays.npz") as npz:
        return {key.replace(".", "/"): npz[key] for key in npz.files}


@pytest.fixture()
def tiny(tmp_path) -> Path:
    return Path(shutil.copytree(FIXTURES / "tiny11", tmp_path / "tiny11"))


@pytest.mark.parametrize("name", ["tiny11", "vocab50257"])
def test_every_tensor_is_bit_exact(name):
    arrays, saved = read_bundle(FIXTURES / name / "model.ckpt"), saved_arrays(name)
    assert sorted(arrays) == sorted(saved)
    for key, expected in saved.items():
        assert arrays[key].dtype == expected.dtype and arrays[key].shape == expected.shape, key
        assert arrays[key].tobytes() == expected.tobytes(), key


def test_keys_are_byte_sorted_and_mapped_by_name():
    names = [entry.name for entry in read_index(FIXTURES / "tiny11" / "model.ckpt.index").entries]
    assert names == sorted(names) and names.index("model/h10/ln_1/g") < names.index("model/h2/ln_1/g")
    assert read_bundle(FIXTURES / "tiny11" / "model.ckpt")["model/h10/attn/c_attn/w"].shape == (1, 8, 24)


def test_tensors_are_memory_mapped_copy_on_write(tiny):
    wte = read_bundle(tiny / "model.ckpt")["model/wte"]
    assert isinstance(wte.base, np.memmap) or isinstance(wte, np.memmap)
    before = (tiny / "model.ckpt.data-00000-of-00001").read_bytes()
    wte[:] = 0.0  # a fine-tune writes into its weights: the file must not change
    assert (tiny / "model.ckpt.data-00000-of-00001").read_bytes() == before


def test_crc32c_known_values():
    assert crc32c.crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c.crc32c(b"") == 0
    assert crc32c._python_crc32c(memoryview(bytes(range(256)) * 3)) == crc32c.crc32c(bytes(range(256)) * 3)
    assert crc32c.mask(0) == 0xA282EAD8  # the rest of the mask is proven by every fixture tensor passing its check


def test_missing_data_file_is_named(tiny):
    (tiny / "model.ckpt.data-00000-of-00001").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.ckpt\.data-00000-of-00001: missing"):
        read_bundle(tiny / "model.ckpt")


def test_one_corrupted_byte_names_the_tensor(tiny):
    entry = next(e for e in read_index(tiny / "model.ckpt.index").entries if e.name == "model/h3/mlp/c_fc/w")
    data = tiny / "model.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[entry.offset + 5] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"data-00000-of-00001: tensor 'model/h3/mlp/c_fc/w' fails its crc32c"):
        read_bundle(tiny / "model.ckpt")
    assert read_bundle(tiny / "model.ckpt", verify=False)["model/h3/mlp/c_fc/w"].shape == (1, 8, 32)


def test_truncated_data_file_names_the_tensor(tiny):
    data = tiny / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"tensor 'model/wte' lies at bytes .* truncated"):
        read_bundle(tiny / "model.ckpt", verify=False)


@pytest.mark.parametrize("keep", [0, 30, 3000, -1])
def test_truncated_index_is_one_clear_error(tiny, keep):
    index = tiny / "model.ckpt.index"
    index.write_bytes(index.read_bytes()[:keep])
    with pytest.raises(ValueError, match=r"model\.ckpt\.index: not a readable TensorFlow checkpoint index"):
        read_bundle(tiny / "model.ckpt")


def test_corrupted_index_block_fails_its_checksum(tiny):
    index = tiny / "model.ckpt.index"
    raw = bytearray(index.read_bytes())
    raw[40] ^= 0x20  # inside the data block
    index.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="fails its crc32c check"):
        read_bundle(tiny / "model.ckpt")


def test_missing_index_and_foreign_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.ckpt\.index: missing"):
        read_bundle(tmp_path / "model.ckpt")
    (tmp_path / "model.ckpt.index").write_bytes(b"\0" * 40 + struct.pack("<Q", MAGIC ^ 1))
    with pytest.raises(ValueError, match="not the table magic number"):
        read_table(tmp_path / "model.ckpt.index")


def test_compressed_blocks_are_refused_clearly(tiny):
    index = tiny / "model.ckpt.index"
    raw = bytearray(index.read_bytes())
    _metaindex, pos = read_handle(raw[-48:], 0)
    (offset, size), _ = read_handle(raw[-48:], pos)  # the index block
    raw[offset + size] = 1  # snappy, with a valid checksum
    crc = crc32c.masked_crc32c(bytes(raw[offset : offset + size + 1]))
    raw[offset + size + 1 : offset + size + 5] = struct.pack("<I", crc)
    index.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"is compressed \(type 1\); gptlab reads uncompressed tables"):
        read_bundle(tiny / "model.ckpt")


def test_a_header_field_of_the_wrong_wire_type_is_a_readable_error():
    """num_shards 1, then field 3 (the version sub-message) written as a number: refused, not a TypeError."""
    from gptlab.checkpoint.tf_bundle import _header

    assert _header(b"\x08\x01") == 1
    with pytest.raises(ValueError, match="field 3 holds a number where a message belongs"):
        _header(b"\x08\x01\x18\x01")
