"""A run that fails keeps its record: a full disk while writing a checkpoint or a metrics line, and a
loss gone NaN, end in one error line and exit 1, with summary.json saying why, metrics.jsonl whole up
to the last finished evaluation, the plots drawn and checkpoints/last the last good one.

The full disk is injected by patching one writer in a `python -c` that then runs `gptlab.cli.main`,
the command line's own entry point."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from gptlab.checkpoint.manifest import verify_files
from gptlab.loading import load_model

BIN = Path(sys.executable).parent
TINY = ["--data", "the-verdict", "--model", "gpt-tiny", "--context-length", "32", "--batch-size", "4",
        "--eval-batches", "2", "--warmup-steps", "2", "--sample-tokens", "0", "--seed", "3", "--eval-every", "2",
        "--log-every", "2"]
# Runs the CLI with each writer of FULL_DISK ("module:function:match:n;...") raising ENOSPC on its n-th
# call whose path argument holds `match` (an empty match: any call).
FULL_DISK = """
import errno, importlib, os, sys
from gptlab.cli import main

def patch(module_name, name, match, nth):
    module = importlib.import_module(module_name)
    real, calls = getattr(module, name), []
    def full_disk(*args, **kwargs):
        path = str(args[1] if name == "save_file" else args[0])
        if match in path:
            calls.append(path)
            if len(calls) == int(nth):
                raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(*args, **kwargs)
    setattr(module, name, full_disk)

for writer in os.environ["FULL_DISK"].split(";"):
    patch(*writer.split(":"))
sys.exit(main(sys.argv[1:]))
"""


def gptlab(*args: str, full_disk: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(BIN / "gptlab")]
    if full_disk is not None:
        env["FULL_DISK"] = full_disk
        command = [sys.executable, "-c", FULL_DISK]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=600, env=env)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and done.stderr.rstrip().endswith(errors[0]), done.stderr[-3000:]
    return errors[0]


def steps_of(run: Path, kind: str = "val_loss") -> list[int]:
    """The steps of the evaluations in metrics.jsonl (kind "train_loss": of every line with a training loss)."""
    return [line["step"] for line in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if kind in line]


def summary_of(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def last_step(run: Path) -> int:
    verify_files(run / "checkpoints" / "last")  # complete and unaltered
    return json.loads((run / "checkpoints" / "last" / "training.json").read_text())["step"]


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    run = tmp_path / "run"
    done = gptlab("pretrain", *TINY, "--max-steps", "6", "--out", str(run),
                  full_disk="gptlab.checkpoint.weights:save_file:.last.:4")  # last's 2nd file at step 4
    line = one_error_line(done)
    assert "training.safetensors: No space left on device. Free some disk space" in line
    summary = summary_of(run)
    assert summary["status"] == "failed" and "No space left on device" in summary["reason"]
    assert last_step(run) == 2
    assert steps_of(run) == [2, 4]  # step 4 was evaluated: its line is kept
    assert (run / "loss.png").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "last"]  # no debris

    again = gptlab("pretrain", "--out", str(run), "--resume", "--max-steps", "6")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr and "at step 2" in again.stderr
    assert steps_of(run) == [2, 4, 6]  # step 4's line of the failed run gave way to the resumed run's
    assert [step for step in steps_of(run, "train_loss") if step not in steps_of(run)] == []  # training lines too...
    assert len(steps_of(run, "train_loss")) == 6  # ...each written once: 2, 4, 6 and evaluations' 2, 4, 6
    assert summary_of(run)["status"] == "completed" and last_step(run) == 6


def test_a_full_disk_while_writing_metrics_keeps_the_lines_before(tmp_path):
    run = tmp_path / "run"
    done = gptlab("pretrain", *TINY, "--max-steps", "6", "--out", str(run),
                  full_disk="gptlab.training.loop:append_line::4")  # step 4's evaluation (after 2 training lines)
    line = one_error_line(done)
    assert f"{run / 'metrics.jsonl'}: No space left on device" in line
    assert steps_of(run) == [2]
    assert last_step(run) == 2
    summary = summary_of(run)
    assert summary["status"] == "failed" and summary["steps"] == 4
    assert summary["reason"] == f"OSError: [Errno 28] No space left on device: '{run / 'metrics.jsonl'}'"


def test_a_full_disk_that_refuses_the_summary_too_still_ends_in_one_line(tmp_path):
    run = tmp_path / "run"
    done = gptlab("pretrain", *TINY, "--max-steps", "4", "--out", str(run),
                  full_disk="gptlab.training.loop:append_line::1;gptlab.training.loop:write_text_atomically::1")
    assert f"{run / 'metrics.jsonl'}: No space left on device" in one_error_line(done)
    assert not (run / "summary.json").exists() and not (run / "metrics.jsonl").exists()


def test_a_loss_gone_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    # a rate that rises without bound (1e3 after a warmup of 1,000 steps) makes the loss NaN within tens of steps
    done = gptlab("pretrain", *TINY, "--max-steps", "60", "--lr", "1e3", "--warmup-steps", "1000",
                  "--out", str(run))
    line = one_error_line(done)
    found = re.search(r"(validation )?loss became (NaN|inf) at step (\d+) \(learning rate too high\?\)", line)
    assert found, line
    nan_step = int(found.group(3))
    finished = nan_step if found.group(1) else nan_step - 1  # a NaN training loss: its step does not count
    summary = summary_of(run)
    assert summary["status"] == "failed" and found.group(0) in summary["reason"]
    assert summary["steps"] == finished
    good = last_step(run)
    assert good == steps_of(run)[-1] and finished - 2 <= good < nan_step  # evaluations every 2 steps
    assert f"{run / 'checkpoints' / 'last'} (step {good})" in line
    load_model(str(run / "checkpoints" / "last"))  # finite weights: loading checks
    assert (run / "loss.png").is_file()
