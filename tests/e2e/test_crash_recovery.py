"""A run killed in the middle of a checkpoint swap resumes from the newest complete checkpoint."""

from __future__ import annotations

import json
import shutil

from e2e.commands import gptlab

TINY = ["--data", "the-verdict", "--model", "gpt-tiny", "--context-length", "32", "--batch-size", "4",
        "--eval-batches", "2", "--warmup-steps", "2", "--sample-tokens", "0", "--seed", "3"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def test_resume_after_a_crash_between_the_renames_of_a_checkpoint_swap(tmp_path):
    run = tmp_path / "run"
    done = gptlab("pretrain", *TINY, "--max-steps", "4", "--eval-every", "2", "--out", str(run), env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    checkpoints = run / "checkpoints"
    # the state a kill between "move last/ aside" and "move the new one in" leaves, plus an unfinished write
    shutil.copytree(checkpoints / "last", checkpoints / ".last.new-4242")
    (checkpoints / "last").rename(checkpoints / ".last.old-4242")
    (checkpoints / ".last.tmp-abc").mkdir()
    (checkpoints / ".last.tmp-abc" / "model.safetensors").write_bytes(b"half")
    again = gptlab("pretrain", "--out", str(run), "--resume", "--max-steps", "6", env=ONE_THREAD)
    assert again.returncode == 0, again.stderr
    assert "restored" in again.stderr and ".last.new-4242" in again.stderr
    assert "resumed from" in again.stderr and "at step 4" in again.stderr
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "val_loss" in line] == [2, 4, 6]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best", "last"]
