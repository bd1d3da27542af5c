"""Failures that used to surface as another library's words (safetensors' Rust error, uvicorn's exit code 3,
Python's OverflowError, torch's allocator) or not at all (an empty stop string, a 0-byte config.json) end
in one line saying what to do, with exit code 1. Each runs the CLI's `main` in-process, the failure
injected where a real machine would need a full disk."""

from __future__ import annotations

import errno
import os
import re
import socket
from pathlib import Path

import pytest
from safetensors import SafetensorError

from gptlab.cli import main

PRETRAIN = ["pretrain", "--data", "the-verdict", "--model", "gpt-tiny", "--context-length", "32", "--batch-size", "2",
            "--max-steps", "1", "--eval-batches", "1", "--warmup-steps", "0", "--sample-tokens", "0"]


def last_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """The last line `gptlab ARGS` writes to stderr, which must exit with code 1."""
    code = main(list(args))
    err = capsys.readouterr().err
    assert code == 1, err[-3000:]
    assert "Traceback" not in err and "unexpected" not in err, err[-3000:]
    return err.splitlines()[-1]


def test_a_full_disk_under_safetensors_is_the_os_error_it_is(tmp_path, capsys, monkeypatch):
    """safetensors reports a full disk in its own exception, the OS's reason inside its text."""
    def full(*args: object, **kwargs: object) -> None:
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    monkeypatch.setattr("gptlab.checkpoint.weights.save_file", full)
    line = last_error(capsys, "convert", "gpt-tiny", str(tmp_path / "tiny"))
    assert re.fullmatch(rf"error: {re.escape(str(tmp_path))}/tiny/model\.safetensors: No space left on "
                        r"device \([\d,.]+ MB free there, the file needs 3\.\d MB\)\. Free some disk space and run "
                        r"again .*", line), line
    assert not (tmp_path / "tiny").exists() and not list(tmp_path.iterdir())  # nothing half-written is left


def test_a_full_disk_leaves_no_empty_config_json_in_the_run(tmp_path, capsys, monkeypatch):
    """A full disk creates the file, then refuses its bytes: a run folder must not keep the 0-byte result."""
    write_text = Path.write_text

    def full(path: Path, *args: object, **kwargs: object) -> int:
        if "config.json" in path.name:
            path.touch()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    run = tmp_path / "run"
    line = last_error(capsys, *PRETRAIN, "--out", str(run))
    assert line.startswith(f"error: {run / 'config.json'}: No space left on device. Free some disk space"), line
    assert list(run.iterdir()) == []


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_a_port_out_of_range(capsys, port):
    line = last_error(capsys, "serve", "--model", "gpt-tiny", "--port", port)
    assert line == f"error: --port must be from 0 to 65535 (0 picks a free one), got {port}"


def test_a_port_in_use_names_the_port_and_who_holds_it(capsys):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        line = last_error(capsys, "serve", "--model", "gpt-tiny", "--port", str(port))
    assert line.startswith(f"error: cannot listen on 127.0.0.1:{port}: Address already in use, held by pid "
                           f"{os.getpid()} ("), line
    assert line.endswith("; stop it or pick another --port (0 picks a free one)"), line


def test_a_context_too_large_for_memory_says_the_largest_that_fits(tmp_path, capsys):
    """gpt-tiny's learned positions at 10^9 tokens: 16 billion parameters, 238 GiB to train (weights, gradients,
    AdamW's moments), refused before torch is asked for any of it."""
    args = [arg if arg != "32" else "1000000000" for arg in PRETRAIN]
    line = last_error(capsys, *args, "--out", str(tmp_path / "run"))
    found = re.fullmatch(r"error: gpt-tiny with a context of 1,000,000,000 tokens: training it takes about 238\.\d "
                         r"GiB \(float32 weights, gradients and AdamW's two moments\) but [\d,.]+ GiB of memory is "
                         r"free; the largest context that fits is ([\d,]+) \(--context-length\)", line)
    assert found, line
    assert 1_000 < int(found[1].replace(",", "")) < 1_000_000_000


def test_an_empty_stop_string_is_refused_as_the_server_refuses_it(capsys):
    line = last_error(capsys, "generate", "--model", "gpt-tiny", "--prompt", "Hi", "--stop", "")
    assert line == ('error: a stop string must not be empty (--stop ""): it would end every answer before its first '
                    "token")
