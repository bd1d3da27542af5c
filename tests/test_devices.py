from pathlib import Path

import pytest

from gptlab.devices import cpu_has_native_bf16

FLAGS = "fpu vme sse sse2 avx2 avx512f avx512bw avx512_vnni"


@pytest.mark.parametrize("extra, native", [(" avx512_bf16", True), (" amx_bf16 amx_tile", True), ("", False)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, extra, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {FLAGS}{extra}\n\nprocessor\t: 1\n")
    assert cpu_has_native_bf16(cpuinfo) is native


def test_unreadable_cpu_flags_mean_no_native_bf16(tmp_path):
    assert cpu_has_native_bf16(tmp_path / "missing") is False
    assert cpu_has_native_bf16(Path("/")) is False  # a directory: read_text raises IsADirectoryError (an OSError)
