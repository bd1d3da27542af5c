"""Quality anchor: nanoGPT's CPU recipe for character-level Tiny Shakespeare, through the CLI.

nanoGPT reaches val 1.874-1.896 with this recipe over 3 seeds (mean 1.885; 4 layers, 4 heads, 128
wide, context 64, batch 12, 2,000 steps, lr 1e-3 → 1e-4, warmup 100, dropout 0). Both estimate the
validation loss on 20 random batches, about ±0.01 of noise, so gptlab must land within that of
nanoGPT's mean, in whichever precision `auto` picks (bf16-mixed on this CPU: 1.8908 at seed 1337;
float32: 1.8887). BENCHMARKS.md has the seeds of both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RECIPE = ["--data", "tinyshakespeare", "--tokenizer", "char", "--model", "gpt-tiny", "--n-layer", "4",
          "--n-head", "4", "--n-embd", "128", "--context-length", "64", "--dropout", "0", "--batch-size", "12",
          "--max-steps", "2000", "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-steps", "100", "--beta2", "0.99",
          "--eval-every", "250", "--eval-batches", "20"]


def test_char_shakespeare_reaches_nanogpt_quality(tmp_path):
    out = subprocess.run([str(Path(sys.executable).parent / "gptlab"), "pretrain", *RECIPE, "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=1200, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 2000
    assert summary["best_val_loss"] <= 1.895, summary
    config = json.loads((tmp_path / "checkpoints" / "best" / "config.json").read_text())
    assert config["tokenizer"]["type"] == "char" and len(config["tokenizer"]["chars"]) == 65
