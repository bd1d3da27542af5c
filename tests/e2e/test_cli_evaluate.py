"""`gptlab perplexity`, and `gptlab judge` against an Ollama-speaking test server on 127.0.0.1."""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from e2e.commands import gptlab

RESPONSES = [  # (output, model_response, what the stand-in judge replies)
    ("Paris.", "Paris.", "100"),
    ("Seven.", "Six.", "Score: 20"),
    ("Blue.", "Blue!", "I'd say 90."),
    ("Yes.", "Maybe.", "I cannot judge this."),
]


class OllamaStandIn(BaseHTTPRequestHandler):
    """Answers /api/chat as Ollama does, with a reply chosen by the response inside the prompt."""

    requests: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"path": self.path, **body})
        response = re.search(r"score the model response `(.*?)` on a scale", body["messages"][0]["content"]).group(1)
        reply = next(r for _, given, r in RESPONSES if given == response)
        payload = json.dumps({"model": body["model"], "message": {"role": "assistant", "content": reply},
                              "done": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def ollama() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OllamaStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    OllamaStandIn.requests.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_judge_scores_each_response_and_summarises(ollama, tmp_path):
    responses = tmp_path / "instruction-data-with-response.json"
    responses.write_text(json.dumps([{"instruction": f"Question {i}?", "input": "", "output": output,
                                      "model_response": given} for i, (output, given, _) in enumerate(RESPONSES)]))
    out = gptlab("judge", str(responses), "--judge-model", "llama3", "--url", ollama)
    assert out.returncode == 0, out.stderr
    assert "ollama:llama3 scored 3/4 responses: mean 70.00 (median 90, min 20, max 100); 1 replies without a score" \
        in out.stdout
    written = json.loads((tmp_path / "instruction-data-with-response-scores.json").read_text())
    assert [r["score"] for r in written["records"]] == [100, 20, 90, None]
    assert written["records"][1]["judge_reply"] == "Score: 20" and written["records"][1]["output"] == "Seven."
    assert written["summary"]["mean"] == 70.0
    assert (tmp_path / "instruction-data-with-response-scores.png").read_bytes()[:4] == b"\x89PNG"
    first = OllamaStandIn.requests[0]
    assert first["path"] == "/api/chat" and first["model"] == "llama3" and first["stream"] is False
    assert first["options"]["temperature"] == 0 and first["options"]["seed"] == 123
    assert "correct output `Paris.`" in first["messages"][0]["content"]


def test_judge_refuses_records_without_responses(ollama, tmp_path):
    plain = tmp_path / "test.json"
    plain.write_text(json.dumps([{"instruction": "Question?", "input": "", "output": "Answer."}]))
    out = gptlab("judge", str(plain), "--judge-model", "llama3", "--url", ollama)
    assert out.returncode == 1
    assert f"error: {plain}, record 0: no string 'model_response' field" in out.stderr
    assert OllamaStandIn.requests == []


def test_perplexity_of_a_random_model_is_about_the_vocabulary_size(tmp_path):
    out = gptlab("perplexity", "--model", "gpt-tiny", "--data", "the-verdict", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["tokens"], report["context"], report["stride"]) == (5144, 128, 64)
    assert abs(report["loss"] - math.log(50257)) < 0.05  # near-uniform predictions over 50,257 tokens
    assert report["perplexity"] == pytest.approx(math.exp(report["loss"]), rel=1e-4)
    text = tmp_path / "mine.txt"
    text.write_text("A short text of my own. " * 20)
    out = gptlab("perplexity", "--model", "gpt-tiny", "--data", str(text), "--context", "256")
    assert out.returncode == 1 and "error: --context 256 is longer than the model's context (128)" in out.stderr
