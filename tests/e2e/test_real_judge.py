"""`gptlab judge` with a real local judge: the built-in SmolLM2 behind `gptlab serve` on 127.0.0.1.

The book's chapter 7 scores responses with Llama 3 8B through Ollama; the same OpenAI-compatible
path works with any server, and `gptlab serve smollm2` is the judge every machine has offline.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.servers import start_server
from gptlab.evaluation.judge import parse_score

BIN = Path(sys.executable).parent
RECORDS = [  # (instruction, output, model_response)
    ("What is the capital of France?", "The capital of France is Paris.", "The capital of France is Paris."),
    ("What is the capital of France?", "The capital of France is Paris.", "Bananas are yellow."),
    ("Name the largest planet.", "Jupiter is the largest planet.", "The largest planet is Jupiter."),
]


@pytest.fixture()
def smollm2_judge(tmp_path):
    server = start_server("smollm2", tmp_path / "server.log", "--max-tokens", "8")  # a score is a few tokens
    yield server
    assert server.stop() == 0


def test_judge_scores_responses_with_smollm2_served_locally(smollm2_judge, tmp_path):
    assert smollm2_judge.url.startswith("http://127.0.0.1:")
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps([{"instruction": i, "input": "", "output": o, "model_response": r}
                                     for i, o, r in RECORDS]))
    out = subprocess.run([str(BIN / "gptlab"), "judge", str(responses), "--backend", "openai", "--url",
                          smollm2_judge.url + "/v1", "--judge-model", "smollm2"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "openai:smollm2 scored" in out.stdout and "ROUGE-L of the responses" in out.stdout
    written = json.loads((tmp_path / "responses-scores.json").read_text())
    summary, rows = written["summary"], written["records"]
    assert [r["model_response"] for r in rows] == [r for _, _, r in RECORDS]  # each record kept in its place
    assert all(isinstance(r["judge_reply"], str) and r["judge_reply"] for r in rows)  # the judge really answered
    scores = [parse_score(r["judge_reply"]) for r in rows]
    assert [r["score"] for r in rows] == scores  # each record scored by its own reply
    assert summary["records"] == 3 and summary["scored"] == sum(s is not None for s in scores)
    assert [r["rouge_l"] for r in rows][:2] == [1.0, 0.0]
    assert summary["rouge_l_mean"] == pytest.approx(sum(r["rouge_l"] for r in rows) / 3, abs=1e-4)
    assert (tmp_path / "responses-scores.png").read_bytes()[:4] == b"\x89PNG"
