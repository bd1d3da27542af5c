"""The main job's first step as `scripts/demo.sh` runs it: questions piped into `gptlab chat --model smollm2`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_piped_questions_show_in_the_transcript_before_their_answers():
    done = subprocess.run([str(BIN / "gptlab"), "chat", "--model", "smollm2", "--temperature", "0",
                           "--max-new-tokens", "12"], input="What is the capital of France?\n/quit\n",
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    transcript = done.stdout.split(">>> What is the capital of France?\n", 1)
    assert len(transcript) == 2, done.stdout  # the question, echoed because stdin is not a terminal
    assert "Paris" in transcript[1].split(">>> ")[0]  # the answer follows it
