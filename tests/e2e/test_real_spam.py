"""The spam recipe on the real SmolLM2 backbone, through `gptlab finetune classify` as a user runs it.

The recipe (docs/results.md): the last 4 of SmolLM2's 30 blocks, its final norm and a new class
head train (AdamW 1e-4, cosine to 1e-5, 300 steps of 8 texts, about 2.3 epochs) under bf16
autocast; the head reads the last real token of each text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
RECIPE = ["--train-layers", "last-4", "--lr", "1e-4", "--min-lr", "1e-5", "--warmup-steps", "20", "--max-steps", "300",
          "--eval-every", "100", "--eval-batches", "5", "--precision", "bf16-mixed", "--group-by-length"]


def gptlab(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "gptlab"), *args], capture_output=True, text=True, timeout=timeout)


def finetune(out: Path, *overrides: str, timeout: int = 600) -> dict:
    """The recipe's command (flags given later win), and the run's summary."""
    done = gptlab("finetune", "classify", "--data", "sms-spam", "--model", "smollm2", *RECIPE, *overrides,
                  "--out", str(out), timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "vs" in done.stdout and "(this model)" in done.stdout  # the baseline printed beside the model
    return json.loads((out / "summary.json").read_text())


def test_the_recipe_runs_on_a_few_texts_and_the_classifier_labels_messages(tmp_path):
    """The recipe's path, cut to 2% of each split and 2 steps: every piece runs on the real weights."""
    run = tmp_path / "spam"
    summary = finetune(run, "--subset", "0.02", "--max-steps", "2", "--eval-every", "2")
    assert summary["steps"] == 2 and summary["labels"] == ["ham", "spam"]
    assert [len((run / f"{s}.jsonl").read_text().splitlines()) for s in ("train", "val", "test")] == [20, 2, 6]
    assert sum(map(sum, summary["test_confusion"])) == 6 and "baseline" in summary
    saved = json.loads((run / "checkpoints" / "best" / "config.json").read_text())
    assert saved["model"]["n_layer"] == 30 and saved["labels"] == ["ham", "spam"]
    labels = gptlab("classify", "--model", str(run), "--json", "WIN a FREE cruise! Text WIN to 80086 now",
                    "See you at dinner tonight")
    assert labels.returncode == 0, labels.stderr[-2000:]
    results = [json.loads(line) for line in labels.stdout.splitlines()]
    assert len(results) == 2 and all(0.5 <= r["probability"] <= 1 for r in results)


@pytest.mark.slow  # about 10-25 minutes on 2 CPU cores; run with `bash scripts/test.sh -m slow`
@pytest.mark.timeout(3600)
def test_the_recipe_beats_98_5_percent_and_the_baseline_of_the_same_run(tmp_path):
    summary = finetune(tmp_path / "spam", timeout=3600)
    assert summary["test_accuracy"] >= 0.985
    assert summary["test_accuracy"] >= summary["baseline"]["test_accuracy"]
