"""The torch floor: an older torch is refused in one line at import; newer-only features check themselves."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

import gptlab
from gptlab.cli import main

REPO = Path(__file__).resolve().parents[1]
# `import gptlab` in a fresh interpreter that reports torch as installed at the version given
FAKE_TORCH = ("import importlib.metadata as m; real = m.version; "
              "m.version = lambda name: {version!r} if name == 'torch' else real(name); import gptlab")


def test_an_old_torch_is_refused_in_one_line_at_import():
    done = subprocess.run([sys.executable, "-c", FAKE_TORCH.format(version="2.3.1")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "ImportError: gptlab needs torch >= 2.5, found 2.3.1: pip install -U 'torch>=2.5'")


@pytest.mark.parametrize("version", ["2.5.0", "2.5.1+cu121", "2.6.0a0+git1234abc", "2.13.0+cpu", "3.0.0", None])
def test_the_floor_and_anything_newer_import(version):
    gptlab.check_torch(version)  # raises on a refusal


@pytest.mark.parametrize("version", ["2.4.1", "2.2.0+cpu", "1.13.1"])
def test_anything_older_is_refused(version):
    with pytest.raises(ImportError, match=re.escape(f"found {version}: pip install -U 'torch>=2.5'")):
        gptlab.check_torch(version)


def test_pyproject_declares_the_floor_the_import_checks():
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(d for d in dependencies if re.match(r"torch\b", d))
    assert torch == "torch>=" + ".".join(map(str, gptlab.MIN_TORCH))


def test_int4_on_a_cpu_without_its_kernels_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr("gptlab.quantize.has_cpu_int4", lambda: False)  # torch 2.5: no CPU int4 kernels
    code = main(["generate", "--model", "llama-tiny", "--quantize", "int4", "--prompt", "Hi", "--max-new-tokens", "1"])
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        "error: int4 on the CPU needs torch >= 2.6 (its CPU int4 kernels), found "
        f"{torch.__version__}: quantize to int8, or pip install -U 'torch>=2.6'")
