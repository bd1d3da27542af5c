"""Crash safety of the checkpoint swap: a process killed between any two file operations of
`write_folder_atomically` leaves a folder that `recover_folder` (run at every training start)
turns back into the newest complete checkpoint, with no debris."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gptlab.checkpoint.native import recover_folder, write_folder_atomically

CHILD = """
import os, shutil, sys
from pathlib import Path
from gptlab.checkpoint import native

folder, version, die_at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
calls = 0
def dying(real):
    def call(*args, **kwargs):
        global calls
        calls += 1
        if calls == die_at:
            os._exit(9)  # as kill -9: no clean-up runs
        return real(*args, **kwargs)
    return call
native.os.replace = dying(os.replace)
native.shutil.rmtree = dying(shutil.rmtree)
native._fsync = dying(native._fsync)

def write(tmp):
    (tmp / "model.txt").write_text(version)
    (tmp / "manifest.txt").write_text(version)
native.write_folder_atomically(folder, write)
print("finished", calls)
"""


def write_version(folder: Path, version: str, die_at: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, str(folder), version, str(die_at)],
                          capture_output=True, text=True, timeout=120)


def test_the_swap_has_the_file_operations_this_test_interrupts(tmp_path):
    folder = tmp_path / "last"
    assert write_version(folder, "v1").returncode == 0
    done = write_version(folder, "v2")
    assert done.returncode == 0 and (folder / "model.txt").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


@pytest.fixture(scope="module")
def swap_operations(tmp_path_factory) -> int:
    """How many file operations replacing a checkpoint takes."""
    folder = tmp_path_factory.mktemp("count") / "last"
    write_version(folder, "v1")
    return int(write_version(folder, "v2").stdout.split()[-1])


@pytest.mark.parametrize("die_at", range(1, 12))
def test_a_crash_at_any_point_of_the_swap_recovers_a_complete_checkpoint(tmp_path, die_at, swap_operations):
    assert swap_operations == 11  # fsync x4 (two files, manifest.json, the folder), rmtree, rename, rmtree, rename x2,
    # fsync, rmtree
    folder = tmp_path / "run" / "last"
    assert write_version(folder, "v1").returncode == 0
    assert write_version(folder, "v2", die_at).returncode == 9
    recover_folder(folder)
    assert (folder / "model.txt").read_text() == (folder / "manifest.txt").read_text() in ("v1", "v2")
    assert sorted(p.name for p in folder.parent.iterdir()) == ["last"], "debris left behind"
    assert recover_folder(folder) is None


def test_an_error_while_writing_keeps_the_previous_checkpoint(tmp_path):
    folder = tmp_path / "last"
    write_folder_atomically(folder, lambda tmp: (tmp / "model.txt").write_text("v1"))

    def failing(tmp: Path) -> None:
        (tmp / "model.txt").write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_folder_atomically(folder, failing)
    assert (folder / "model.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_a_full_disk_names_the_file_as_the_folder_will_hold_it(tmp_path):
    folder = tmp_path / "last"

    def failing(tmp: Path) -> None:
        raise OSError(28, "No space left on device", str(tmp / "model.safetensors"))

    with pytest.raises(OSError, match="No space left") as caught:
        write_folder_atomically(folder, failing)
    assert caught.value.filename == str(folder / "model.safetensors") and caught.value.errno == 28
