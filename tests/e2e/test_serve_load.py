"""benchmarks/serve_load.py, bounded: concurrent streaming chats against `gptlab serve` all complete
and each says what the same request says alone (the script checks both and fails otherwise)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"


def test_concurrent_streams_complete_and_equal_their_answers_alone():
    done = subprocess.run([sys.executable, str(SCRIPT), "--models", "gpt-tiny", "--concurrency", "4", "12",
                           "--distinct", "6", "--max-tokens", "16", "--timeout", "120"],
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| gpt-tiny |")]
    assert [row.split("|")[2].strip() for row in rows] == ["one at a time", "4 concurrent", "12 concurrent"]
    assert [int(row.split("|")[3]) for row in rows] == [6, 4, 12]
