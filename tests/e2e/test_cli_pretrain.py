"""`gptlab pretrain` as a user runs it, including Ctrl-C, resume and torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from e2e.commands import gptlab as forked_gptlab
from gptlab.cli import main
from gptlab.devices import cpu_has_native_bf16
from gptlab.evaluation.metrics import read_metrics
from gptlab.evaluation.plots import TRAINING_COLOR

BIN = Path(sys.executable).parent  # the console script and torchrun, where a real process is under test
TINY = ["--data", "the-verdict", "--model", "gpt-tiny", "--context-length", "32", "--batch-size", "4",
        "--eval-batches", "2", "--warmup-steps", "5", "--lr", "3e-3", "--sample-tokens", "8", "--seed", "3"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def gptlab(*args: str) -> subprocess.CompletedProcess:
    """A forked `gptlab` (tests/e2e/commands.py) on one thread, as the real processes below run."""
    return forked_gptlab(*args, env={"OMP_NUM_THREADS": "1"})


def metrics(run: Path) -> list[dict]:
    return read_metrics(run).evaluations


def test_pretrain_on_the_verdict_writes_a_complete_run_folder(tmp_path):
    run = tmp_path / "verdict"
    out = gptlab("pretrain", *TINY, "--max-steps", "60", "--eval-every", "20", "--out", str(run))
    assert out.returncode == 0, out.stderr
    records = metrics(run)
    assert [r["step"] for r in records] == [20, 40, 60]
    assert records[-1]["val_loss"] < records[0]["val_loss"] and records[-1]["train_loss"] < records[0]["train_loss"]
    assert set(records[0]) >= {"step", "tokens", "train_loss", "val_loss", "lr", "tokens_per_second", "elapsed"}
    for name in ("loss.png", "lr.png"):
        assert (run / name).read_bytes()[:8] == PNG_MAGIC
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 60 and summary["best_val_loss"] == min(r["val_loss"] for r in records)
    for checkpoint in ("best", "last"):
        assert (run / "checkpoints" / checkpoint / "model.safetensors").is_file()
    assert "sample: 'Every effort moves you" in out.stderr  # the progress output shows samples
    auto = "bf16-mixed" if cpu_has_native_bf16() else "32"  # the default --precision auto, said in one line
    assert f"precision {auto} (auto for cpu;" in out.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "pretrain" and config["train"]["max_steps"] == 60

    # the run folder is a model everywhere a model is accepted
    gen = gptlab("generate", "--model", str(run), "--prompt", "Every effort", "--max-new-tokens", "5", "--json")
    assert gen.returncode == 0 and len(json.loads(gen.stdout)["completion_ids"]) == 5
    assert "best checkpoint" in gptlab("info", str(run)).stdout

    # --config replays the run
    replay = gptlab("pretrain", "--config", str(run / "config.json"), "--out", str(tmp_path / "replay"))
    assert replay.returncode == 0, replay.stderr
    replayed = [r["val_loss"] for r in metrics(tmp_path / "replay")]
    assert replayed == pytest.approx([r["val_loss"] for r in records], abs=1e-6)


def test_a_30_step_run_with_one_evaluation_draws_its_training_curve(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GPTLAB_TUNE_MALLOC", "0")  # in-process: the test process keeps glibc's defaults
    run = tmp_path / "short"
    assert main(["pretrain", *TINY, "--sample-tokens", "0", "--max-steps", "30", "--eval-every", "30",
                 "--out", str(run)]) == 0
    err = capsys.readouterr().err
    training = read_metrics(run).training
    assert len(metrics(run)) == 1 and [r["step"] for r in training] == list(range(1, 31))  # a point per step
    assert set(training[0]) == {"step", "tokens", "lr", "train_loss", "tokens_per_second", "elapsed"}
    # loss.png draws them as a line: its colour spans most of the plot's width, not only the legend's sample
    pixels = imread(run / "loss.png")[..., :3]
    drawn = (np.abs(pixels - np.array(to_rgb(TRAINING_COLOR))).max(axis=-1) < 0.1).any(axis=0)
    assert drawn.sum() > 300, drawn.sum()
    # stderr is no terminal here: progress comes as lines, not a bar's redraws
    assert "\r" not in err and "train: 30/30 steps, loss " in err
    # the command ran under inference mode only where it does not train, and left grad mode as it found it
    assert main(["generate", "--model", str(run), "--prompt", "Every", "--max-new-tokens", "2"]) == 0
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_ctrl_c_saves_last_and_resume_finishes_like_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    assert gptlab("pretrain", *TINY, "--max-steps", "400", "--eval-every", "40", "--out", str(straight)).returncode == 0
    run = tmp_path / "interrupted"
    proc = subprocess.Popen([str(BIN / "gptlab"), "pretrain", *TINY, "--max-steps", "400", "--eval-every", "40",
                             "--out", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    lines = run / "metrics.jsonl"  # a training line every step; wait for the first evaluation's (step 40)
    while not (lines.is_file() and "val_loss" in lines.read_text()) and time.time() < deadline \
            and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: saved" in err and "--resume" in err
    stopped_at = json.loads((run / "checkpoints" / "last" / "training.json").read_text())["step"]
    assert 40 <= stopped_at < 400
    resumed = gptlab("pretrain", "--out", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = metrics(straight), metrics(run)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    assert [r["step"] for r in read_metrics(run).training] == list(range(1, 401))  # each step's line once
    for ra, rb in zip(a, b):
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], abs=1e-6)
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], abs=1e-6)


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    common = [*TINY, "--max-steps", "12", "--eval-every", "4", "--sample-tokens", "0", "--device", "cpu"]
    single = gptlab("pretrain", *common, "--grad-accum", "2", "--out", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "gptlab", "pretrain",
                          *common, "--out", str(tmp_path / "ddp")], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert ddp.returncode == 0, ddp.stderr
    a, b = metrics(tmp_path / "single"), metrics(tmp_path / "ddp")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [4, 8, 12]
    assert [r["tokens"] for r in a] == [r["tokens"] for r in b]
    for ra, rb in zip(a, b):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], abs=1e-4)
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], abs=1e-4)
    assert (tmp_path / "ddp" / "checkpoints" / "last" / "model.safetensors").is_file()
