"""`gptlab serve` as users reach it: the official `openai` client, plain HTTP, and a dropped stream."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from e2e.servers import Server, start_server
from gptlab.prompts import prompt_style
from gptlab.tokenizer import GPT2Tokenizer

BIN = Path(sys.executable).parent
RED = "Name a fruit that is red."


@pytest.fixture(scope="module")
def server(overfit_run, tmp_path_factory) -> Iterator[Server]:
    """The 16-record model behind `gptlab serve`; it answers each instruction with its record's output."""
    running = start_server(str(overfit_run[0]), tmp_path_factory.mktemp("server") / "server.log", "--name", "tiny")
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_chat_completion_answers_in_the_models_prompt_style(client):
    answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": RED}], temperature=0)
    assert answer.choices[0].message.content == "A red fruit is number 0."
    assert answer.choices[0].finish_reason == "stop" and answer.model == "tiny"
    tokenizer = GPT2Tokenizer()
    assert answer.usage.prompt_tokens == len(tokenizer.encode(prompt_style("alpaca").prompt(RED)))
    assert answer.usage.completion_tokens == len(tokenizer.encode("A red fruit is number 0."))
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_streamed_chat_sends_the_same_answer_in_pieces(client):
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": RED}],
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == "A red fruit is number 0."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_earlier_turns_and_a_system_message_frame_the_new_question(client, overfit_run):
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": RED},
                {"role": "assistant", "content": "A red fruit is number 0."},
                {"role": "user", "content": "Name a fruit that is green."}]
    answer = client.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=12)
    # the same prompt, built by hand, continued by `gptlab generate`
    header = ("Below is an instruction that describes a task. Write a response that appropriately completes "
              "the request.\n\n### Instruction:\n")
    prompt = (f"Answer briefly.\n\n{header}{RED}\n\n### Response:\nA red fruit is number 0.<|endoftext|>"
              f"{header}Name a fruit that is green.\n\n### Response:\n")
    by_hand = subprocess.run([str(BIN / "gptlab"), "generate", "--model", str(overfit_run[0]), "--prompt", prompt,
                              "--temperature", "0", "--max-new-tokens", "12", "--stop", "###", "--json"],
                             capture_output=True, text=True, timeout=120)
    assert by_hand.returncode == 0, by_hand.stderr
    assert answer.choices[0].message.content == json.loads(by_hand.stdout)["completion"].strip()


def test_text_completion_equals_gptlab_generate(client, overfit_run):
    prompt = "Below is an instruction"
    answer = client.completions.create(model="tiny", prompt=prompt, max_tokens=15, temperature=0)
    cli = subprocess.run([str(BIN / "gptlab"), "generate", "--model", str(overfit_run[0]), "--prompt", prompt,
                          "--temperature", "0", "--max-new-tokens", "15", "--json"],
                         capture_output=True, text=True, timeout=120)
    expected = json.loads(cli.stdout)
    assert answer.choices[0].text == expected["completion"]
    assert answer.choices[0].finish_reason == expected["finish_reason"]
    assert answer.usage.completion_tokens == len(expected["completion_ids"])
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt=prompt, max_tokens=15, temperature=0, stream=True))
    assert streamed == expected["completion"]


def test_tiny_temperature_and_top_p_are_answered_as_greedy(client):
    """Legal extremes (they once made the probabilities NaN and the server answer 500)."""
    prompt = "Below is an instruction"
    greedy = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0).choices[0].text
    for settings in ({"temperature": 1e-300}, {"temperature": 1.0, "top_p": 1e-46}):
        answer = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, seed=1, **settings)
        assert answer.choices[0].text == greedy, settings


def test_bad_requests_get_openai_errors(client, server):
    with pytest.raises(openai.NotFoundError, match="model 'gpt-4' not found; this server serves 'tiny'"):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="`temperature`: input should be less than or equal to 2"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], temperature=5)
    with pytest.raises(openai.BadRequestError, match="`presence_penalty` is not supported"):
        client.completions.create(model="tiny", prompt="hi", presence_penalty=1)
    with pytest.raises(openai.BadRequestError, match="context is 128 tokens; the prompt takes") as caught:
        client.completions.create(model="tiny", prompt="word " * 100, max_tokens=50)
    assert caught.value.code == "context_length_exceeded"
    status, body = post(server.url + "/v1/chat/completions", b'{"messages": [}')
    assert status == 400 and body["error"]["message"].startswith("the request body is not valid JSON")
    status, body = post(server.url + "/v1/embeddings", b"{}")
    assert status == 404 and "no route POST /v1/embeddings" in body["error"]["message"]


def test_a_keep_alive_client_goes_on_after_an_error(server):
    """An error may leave the request body unread, so the server closes and says so; the client reconnects."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("POST", "/v1/embeddings", b'{"input": "unread"}', {"Content-Type": "application/json"})
        refused = connection.getresponse()
        assert refused.status == 404 and refused.getheader("Connection") == "close"
        refused.read()
        connection.request("GET", "/v1/models")  # the same client object, as a pooled connection is reused
        assert json.loads(connection.getresponse().read())["data"][0]["id"] == "tiny"
    finally:
        connection.close()


def test_chat_page_and_health(server):
    with urllib.request.urlopen(server.url + "/", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/html")
        assert "<title>gptlab chat</title>" in response.read().decode()
    with urllib.request.urlopen(server.url + "/health", timeout=30) as response:
        assert json.loads(response.read()) == {"status": "ok", "model": "tiny"}


def test_a_dropped_stream_stops_generation_and_frees_the_model(tmp_path):
    """GPT-2 124M (random weights, so no end-of-text) asked for 1000 tokens: ~30 s if it ran on."""
    key = "secret-key"
    big = start_server("gpt2", tmp_path / "server.log", "--api-key", key)
    try:
        status, body = post(big.url + "/v1/completions", b'{"prompt": "hi"}')
        assert status == 401 and "Authorization: Bearer" in body["error"]["message"]
        host, port = big.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        connection.request("POST", "/v1/completions", json.dumps({"prompt": "Hello", "max_tokens": 1000,
                                                                  "stream": True}),
                           {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        response = connection.getresponse()
        assert response.status == 200 and response.readline().startswith(b"data: ")
        response.close()  # the user closed the tab (the response holds the socket too)
        connection.close()
        client = openai.OpenAI(base_url=big.url + "/v1", api_key=key, max_retries=0, timeout=60)
        answer = client.completions.create(model="gpt2", prompt="Hi", max_tokens=2)  # the model is free again
        assert answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens == 2
    finally:
        assert big.stop() == 0
    stopped = re.search(r"client left; generation stopped after (\d+) tokens", big.log.read_text())
    assert stopped and int(stopped.group(1)) < 1000


def test_gptlab_judge_speaks_to_an_openai_compatible_server(server, client, sixteen_records, tmp_path):
    """The judge's openai backend, with this server as the (poor) judge: every reply is recorded as sent."""
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps([{**r, "model_response": r["output"]} for r in sixteen_records[:3]]))
    out = subprocess.run([str(BIN / "gptlab"), "judge", str(responses), "--backend", "openai", "--url",
                          server.url + "/v1", "--judge-model", "tiny", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["records"] == 3
    written = json.loads((tmp_path / "responses-scores.json").read_text())["records"]
    record = sixteen_records[0]
    prompt = (f"Given the input `{record['instruction']}` and correct output `{record['output']}`, score the model "
              f"response `{record['output']}` on a scale from 0 to 100, where 100 is the best score. Respond with "
              "the integer number only.")
    direct = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}],
                                            temperature=0, seed=123)
    assert written[0]["judge_reply"] == direct.choices[0].message.content


def test_info_shows_the_flags_defaults_and_classify_equals_gptlab_classify(overfit_run, classifier_run, tmp_path):
    flags = ("--name", "tiny", "--temperature", "0", "--top-k", "5", "--max-tokens", "12", "--system",
             "Answer briefly.", "--classifier", str(classifier_run))
    served = start_server(str(overfit_run[0]), tmp_path / "server.log", *flags)
    try:
        with urllib.request.urlopen(served.url + "/info", timeout=30) as response:
            info = json.loads(response.read())
        assert info == {"model": "tiny", "dtype": "float32", "context_length": 128,
                        "defaults": {"temperature": 0.0, "top_k": 5, "top_p": None, "max_tokens": 12,
                                     "system": "Answer briefly."},
                        "classifier": {"labels": ["food", "sport", "weather"]}}
        texts = ["pizza soup today", "rain snow wind"]
        status, body = post(served.url + "/v1/classify", json.dumps({"input": texts}).encode())
        cli = subprocess.run([str(BIN / "gptlab"), "classify", "--model", str(classifier_run), "--json", *texts],
                             capture_output=True, text=True, timeout=120)
        expected = [json.loads(line) for line in cli.stdout.splitlines()]
        assert status == 200 and body["object"] == "list"
        assert [(d["index"], d["label"]) for d in body["data"]] == [(i, e["label"]) for i, e in enumerate(expected)]
        for answer, reference in zip(body["data"], expected):
            assert answer["probabilities"] == pytest.approx(reference["probabilities"], abs=1e-4)
        status, body = post(served.url + "/v1/classify", json.dumps({"input": "rain"}).encode())
        assert status == 200 and len(body["data"]) == 1
        status, body = post(served.url + "/v1/classify", b'{"input": []}')
        assert status == 400 and body["error"]["param"] == "input"
        # no temperature or system in the request: the flags' greedy decoding and system message
        bare = post(served.url + "/v1/chat/completions",
                    json.dumps({"messages": [{"role": "user", "content": RED}]}).encode())[1]
        framed = post(served.url + "/v1/chat/completions", json.dumps({"messages": [
            {"role": "system", "content": "Answer briefly."}, {"role": "user", "content": RED}],
            "temperature": 0, "max_tokens": 12}).encode())[1]
        assert bare["choices"][0]["message"] == framed["choices"][0]["message"]
        assert bare["usage"] == framed["usage"]
    finally:
        assert served.stop() == 0


def test_classify_without_a_classifier_is_a_404(server):
    status, body = post(server.url + "/v1/classify", b'{"input": "rain"}')
    assert status == 404 and "--classifier" in body["error"]["message"]
    with urllib.request.urlopen(server.url + "/info", timeout=30) as response:
        assert json.loads(response.read())["classifier"] is None
