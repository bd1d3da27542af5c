"""Quality anchor: nanoGPT's CPU recipe for character-level Tiny Shakespeare, through the CLI.

nanoGPT reaches val 1.886 with this recipe (4 layers, 4 heads, 128 wide, context 64, batch 12,
2,000 steps, lr 1e-3 → 1e-4, warmup 100, dropout 0); gptlab must do at least as well.
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
    assert summary["best_val_loss"] <= 1.89, summary
    config = json.loads((tmp_path / "checkpoints" / "best" / "config.json").read_text())
    assert config["tokenizer"]["type"] == "char" and len(config["tokenizer"]["chars"]) == 65
