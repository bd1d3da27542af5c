"""`gptlab judge` against a scripted OpenAI-compatible server: a score schema when the server takes one,
free text when it refuses it, and G-Eval's probability-weighted score from the logprobs it sends."""

import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from e2e.commands import gptlab


class ScriptedJudge(ThreadingHTTPServer):
    """/v1/chat/completions answering every question alike; `refuses`: request fields it answers 400 to."""

    def __init__(self, reply: str, tokens: list[tuple[str, dict[str, float]]], refuses: tuple[str, ...]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.reply, self.tokens, self.refuses = reply, tokens, refuses
        self.bodies: list[dict] = []

    def answer(self, body: dict) -> tuple[int, dict]:
        self.bodies.append(body)
        refused = [name for name in self.refuses if name in body]
        if refused:
            return 400, {"error": {"message": f"`{refused[0]}` is not supported", "type": "invalid_request_error",
                                   "param": refused[0], "code": None}}
        logprobs = None
        if body.get("logprobs"):
            logprobs = {"content": [{"token": text, "logprob": math.log(top.get(text, 1.0)), "top_logprobs": [
                {"token": alt, "logprob": math.log(p)} for alt, p in top.items()]} for text, top in self.tokens]}
        return 200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [
            {"index": 0, "message": {"role": "assistant", "content": self.reply}, "logprobs": logprobs,
             "finish_reason": "stop"}]}


class Handler(BaseHTTPRequestHandler):
    server: ScriptedJudge

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status, answer = self.server.answer(body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serving(judge: ScriptedJudge) -> Iterator[ScriptedJudge]:
    thread = threading.Thread(target=judge.serve_forever, daemon=True)
    thread.start()
    yield judge
    judge.shutdown()
    judge.server_close()


@pytest.fixture()
def responses(tmp_path) -> Path:
    path = tmp_path / "responses.json"
    path.write_text(json.dumps([{"instruction": f"Question {n}?", "input": "", "output": f"Answer {n}.",
                                 "model_response": response} for n, response in
                                enumerate(["Answer 0.", "Answer one.", "Something else"])]))
    return path


def judged(judge: ScriptedJudge, responses: Path) -> dict:
    done = gptlab("judge", str(responses), "--backend", "openai", "--url", f"http://127.0.0.1:{judge.server_port}/v1",
                  "--judge-model", "scripted", "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(responses.with_name("responses-scores.json").read_text())


def test_a_judge_that_takes_the_schema_and_sends_logprobs_gives_every_score_and_its_weighted_mean(responses):
    """SmolLM2 writes 85 as "8", "5": after "8", 85 .6 and 80 .4 (83); first, that 83 .5, 75 .3, 95 .2."""
    tokens = [('{"', {}), ("score", {}), ('":', {}), (" ", {}), ("8", {"8": .5, "7": .3, "9": .2}),
              ("5", {"5": .6, "0": .4}), ("}", {})]
    with serving(ScriptedJudge('{"score": 85}', tokens, refuses=())) as judge:
        written = judged(judge, responses)
        asked = judge.bodies[0]
    assert asked["response_format"]["json_schema"]["schema"]["properties"]["score"] == {
        "type": "integer", "minimum": 0, "maximum": 100}
    assert asked["logprobs"] is True and asked["top_logprobs"] == 20 and len(judge.bodies) == 3
    assert [r["score"] for r in written["records"]] == [85, 85, 85]
    assert [r["weighted_score"] for r in written["records"]] == [83.0, 83.0, 83.0]
    summary = written["summary"]
    assert summary["scored"] == 3 and summary["weighted"] == {"scored": 3, "mean": 83.0, "spearman_vs_rouge_l": None}


def test_a_judge_that_refuses_the_schema_is_asked_in_free_text_from_then_on(responses):
    """Refused once (a 400), never asked again: the first record costs three requests, the others one."""
    tokens = [("I", {}), (" say", {}), (" 70", {" 70": .5, " 80": .25, " 60": .25}), (".", {})]
    with serving(ScriptedJudge("I say 70.", tokens, refuses=("response_format",))) as judge:
        written = judged(judge, responses)
        asked = [sorted(set(body) - {"model", "messages", "temperature", "seed"}) for body in judge.bodies]
    assert asked == [["logprobs", "response_format", "top_logprobs"], ["response_format"],
                     ["logprobs", "top_logprobs"], ["logprobs", "top_logprobs"], ["logprobs", "top_logprobs"]]
    assert [(r["score"], r["weighted_score"]) for r in written["records"]] == [(70, 70.0)] * 3
    assert written["summary"]["weighted"]["mean"] == 70.0
