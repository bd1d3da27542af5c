"""`gptlab serve` as users reach it: the official `openai` client, plain HTTP, and a dropped stream."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import openai
import pytest

from e2e.commands import gptlab
from e2e.servers import Server, start_server
from gptlab import ask, load_model
from gptlab.cli import main
from gptlab.evaluation.judge import OPENAI_EXTRAS
from gptlab.prompts import prompt_style
from gptlab.tokenizer import GPT2Tokenizer

RED = "Name a fruit that is red."
SCORE_FORMAT = OPENAI_EXTRAS[0]["response_format"]  # what `gptlab judge` asks an OpenAI-compatible judge for


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


def test_earlier_turns_and_a_system_message_frame_the_new_question(client):
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": RED},
                {"role": "assistant", "content": "A red fruit is number 0."},
                {"role": "user", "content": "Name a fruit that is green."}]
    answer = client.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=12)
    # the conversation as the model saw it: the system text, the earlier turn closed by end-of-text, the new
    # question, each piece tokenized apart as in training (so the ids, not the joined text, are what to count)
    header = ("Below is an instruction that describes a task. Write a response that appropriately completes "
              "the request.\n\n### Instruction:\n")
    by_hand = (f"Answer briefly.\n\n{header}{RED}\n\n### Response:\nA red fruit is number 0.<|endoftext|>"
               f"{header}Name a fruit that is green.\n\n### Response:\n")
    tokenizer = GPT2Tokenizer()
    ids = prompt_style("alpaca").chat_ids(tokenizer, "Answer briefly.", [(RED, "A red fruit is number 0.")],
                                          "Name a fruit that is green.")
    assert tokenizer.decode(ids) == by_hand
    assert answer.usage.prompt_tokens == len(ids) and answer.usage.completion_tokens > 0


def test_text_completion_equals_gptlab_generate(client, overfit_run):
    prompt = "Below is an instruction"
    answer = client.completions.create(model="tiny", prompt=prompt, max_tokens=15, temperature=0)
    cli = gptlab("generate", "--model", str(overfit_run[0]), "--prompt", prompt, "--temperature", "0",
                 "--max-new-tokens", "15", "--json", timeout=120)
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


@pytest.mark.parametrize(("flag", "field", "value", "message"), [
    ("--temperature", "temperature", 5, "temperature must be from 0 to 2 (0 = greedy), got 5"),
    ("--top-p", "top_p", 1.5, "top_p must be above 0 and at most 1, got 1.5"),
    ("--top-k", "top_k", 0, "top_k must be at least 1, got 0"),
])
def test_an_out_of_range_setting_gets_one_message_from_cli_api_and_server(server, overfit_run, capsys, flag, field,
                                                                           value, message):
    assert main(["generate", "--model", str(overfit_run[0]), "--prompt", "hi", flag, str(value)]) == 1
    assert capsys.readouterr().err.strip() == f"error: {message}"
    with pytest.raises(ValueError) as python:
        ask(load_model(str(overfit_run[0])), RED, **{field: value})
    assert str(python.value) == message
    status, body = post(server.url + "/v1/completions", json.dumps({"prompt": "hi", field: value}).encode())
    assert (status, body["error"]["message"], body["error"]["param"]) == (400, message, field)


def test_bad_requests_get_openai_errors(client, server):
    with pytest.raises(openai.NotFoundError, match="model 'gpt-4' not found; this server serves 'tiny'"):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="temperature must be from 0 to 2"):
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


def answered_once_free(client: openai.OpenAI, attempts: int = 100) -> openai.types.Completion:
    """A short completion, retried while the one slot is still taken (429): a bounded wait, ~10 s."""
    for _ in range(attempts):
        try:
            return client.completions.create(model="gpt2", prompt="Hi", max_tokens=2)
        except openai.RateLimitError:
            time.sleep(0.1)
    raise AssertionError("the slot was never freed")


def test_one_slot_overflow_429_and_dropped_or_abandoned_requests_free_it(tmp_path):
    """GPT-2 124M (random weights, so no end-of-text) asked for 1000 tokens: ~30 s or more if it ran on.
    One slot and no queue: while it is taken, another request is a 429 with Retry-After."""
    key = "secret-key"
    big = start_server("gpt2", tmp_path / "server.log", "--api-key", key, "--max-batch", "1", "--max-queue", "0")
    client = openai.OpenAI(base_url=big.url + "/v1", api_key=key, max_retries=0, timeout=60)
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    host, port = big.url.removeprefix("http://").split(":")
    try:
        status, body = post(big.url + "/v1/completions", b'{"prompt": "hi"}')
        assert status == 401 and "Authorization: Bearer" in body["error"]["message"]
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        connection.request("POST", "/v1/completions", json.dumps({"prompt": "Hello", "max_tokens": 1000,
                                                                  "stream": True}), auth)
        response = connection.getresponse()
        assert response.status == 200 and response.readline().startswith(b"data: ")
        status, body = post(big.url + "/v1/completions", b'{"prompt": "Hi", "max_tokens": 2}', auth)
        assert status == 429 and body["error"]["code"] == "queue_full"
        with pytest.raises(openai.RateLimitError) as busy:
            client.completions.create(model="gpt2", prompt="Hi", max_tokens=2)
        assert busy.value.response.headers["Retry-After"] == "1"
        response.close()  # the user closed the tab (the response holds the socket too)
        connection.close()
        assert answered_once_free(client).usage.completion_tokens == 2  # the slot is free again
        for _ in range(2):  # non-streaming requests whose clients give up
            with socket.create_connection((host, int(port)), timeout=60) as sock:
                body = json.dumps({"prompt": "Hello", "max_tokens": 1000}).encode()
                sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                             f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
                time.sleep(1)
            assert answered_once_free(client).choices[0].finish_reason == "length"
        stream = client.completions.create(model="gpt2", prompt="Hello", max_tokens=20, stream=True)
        first = next(iter(stream))
        big.process.send_signal(signal.SIGTERM)  # as a service manager stops it: the stream in flight finishes
        chunks = [first, *stream]
        assert chunks[-1].choices[0].finish_reason == "length" and big.process.wait(timeout=60) == 0
    finally:
        assert big.stop() == 0
    stopped = [int(n) for n in re.findall(r"client left; generation stopped after (\d+) tokens", big.log.read_text())]
    assert len(stopped) == 3 and max(stopped) < 1000


def test_gptlab_judge_speaks_to_an_openai_compatible_server(server, client, sixteen_records, tmp_path):
    """The judge's openai backend, with this server as the (poor) judge: every reply is recorded as sent, and
    holds a score (the judge asks for one under a JSON schema, and for logprobs for the weighted score)."""
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps([{**r, "model_response": r["output"]} for r in sixteen_records[:3]]))
    out = gptlab("judge", str(responses), "--backend", "openai", "--url", server.url + "/v1", "--judge-model", "tiny",
                 "--json", timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["records"] == summary["scored"] == summary["weighted"]["scored"] == 3
    written = json.loads((tmp_path / "responses-scores.json").read_text())["records"]
    record = sixteen_records[0]
    prompt = (f"Given the input `{record['instruction']}` and correct output `{record['output']}`, score the model "
              f"response `{record['output']}` on a scale from 0 to 100, where 100 is the best score. Respond with "
              "the integer number only.")
    direct = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}],
                                            temperature=0, seed=123, response_format=SCORE_FORMAT)
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
        cli = gptlab("classify", "--model", str(classifier_run), "--json", *texts, timeout=120)
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


def test_n_choices_with_seeds_seed_plus_i(client):
    """n=3 with seed 5 samples choice i as a request with seed 5 + i would."""
    question = [{"role": "user", "content": "Repeat the word."}]
    both = client.chat.completions.create(model="tiny", messages=question, n=3, seed=5, max_tokens=8)
    assert [c.index for c in both.choices] == [0, 1, 2]
    alone = [client.chat.completions.create(model="tiny", messages=question, seed=5 + i, max_tokens=8)
             .choices[0].message.content for i in range(3)]
    assert [c.message.content for c in both.choices] == alone
    streamed = client.completions.create(model="tiny", prompt="Below is", n=2, seed=1, max_tokens=6, stream=True)
    texts = ["", ""]
    for chunk in streamed:
        texts[chunk.choices[0].index] += chunk.choices[0].text
    whole = client.completions.create(model="tiny", prompt="Below is", n=2, seed=1, max_tokens=6)
    assert texts == [c.text for c in whole.choices]


def test_logprobs_on_chat_and_completions(client):
    answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": RED}],
                                            temperature=0, logprobs=True, top_logprobs=3)
    content = answer.choices[0].logprobs.content
    assert "".join(t.token for t in content) == answer.choices[0].message.content == "A red fruit is number 0."
    for token in content:  # greedy: each token is its place's most likely one
        assert len(token.top_logprobs) == 3 and token.top_logprobs[0].token == token.token
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob) and token.logprob <= 0
        assert bytes(token.bytes).decode() == token.token
    text = client.completions.create(model="tiny", prompt="Below is an instruction", max_tokens=5, temperature=0,
                                     logprobs=2)
    logprobs = text.choices[0].logprobs
    ended = text.choices[0].finish_reason == "stop"  # the end-of-text id that stopped it comes last, as OpenAI's
    assert "".join(logprobs.tokens) == text.choices[0].text + "<|endoftext|>" * ended
    assert len(logprobs.token_logprobs) == text.usage.completion_tokens + ended > 0
    assert all(len(top) == 2 and max(top.values()) == pytest.approx(lp)
               for top, lp in zip(logprobs.top_logprobs, logprobs.token_logprobs))
    assert logprobs.text_offset[0] == 0
    framed = prompt_style("alpaca").prompt(RED)  # the answer runs several tokens: offsets add up when streamed
    whole = client.completions.create(model="tiny", prompt=framed, max_tokens=12, temperature=0, logprobs=1)
    pieces = client.completions.create(model="tiny", prompt=framed, max_tokens=12, temperature=0, logprobs=1,
                                       stream=True)
    offsets = [o for c in pieces if c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset]
    assert len(offsets) > 3 and offsets == whole.choices[0].logprobs.text_offset
    streamed = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": RED}],
                                              temperature=0, logprobs=True, stream=True)
    tokens = [t.token for c in streamed if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert tokens == [t.token for t in content]


def test_echo_with_logprobs_scores_the_prompt_as_gptlab_perplexity_does(client, overfit_run, tmp_path):
    """What lm-evaluation-harness's local-completions backend asks for to score likelihoods."""
    prompt = "Below is an instruction that describes a task. Name a fruit that is red."
    answer = client.completions.create(model="tiny", prompt=prompt, max_tokens=0, echo=True, logprobs=1,
                                       temperature=0)
    logprobs = answer.choices[0].logprobs
    assert answer.choices[0].text == prompt and "".join(logprobs.tokens) == prompt
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    (tmp_path / "prompt.txt").write_text(prompt)
    cli = gptlab("perplexity", "--model", str(overfit_run[0]), "--data", str(tmp_path / "prompt.txt"), "--json",
                 timeout=120)
    assert cli.returncode == 0, cli.stderr
    expected = json.loads(cli.stdout)
    losses = [-lp for lp in logprobs.token_logprobs[1:]]
    assert len(losses) == expected["tokens"]
    assert sum(losses) / len(losses) == pytest.approx(expected["loss"], abs=1e-5)
    continued = client.completions.create(model="tiny", prompt=prompt, max_tokens=3, echo=True, logprobs=0,
                                          temperature=0)
    ended = continued.choices[0].finish_reason == "stop"  # then its end-of-text id is scored last
    assert continued.choices[0].text.startswith(prompt) and len(continued.choices[0].logprobs.tokens) == \
        len(logprobs.tokens) + continued.usage.completion_tokens + ended
    assert continued.choices[0].logprobs.token_logprobs[1:len(losses) + 1] == pytest.approx(
        logprobs.token_logprobs[1:], abs=1e-5)


def test_a_models_chat_template_frames_chat_requests_and_its_refusals_are_400s(tmp_path):
    """A tiny random Llama whose folder carries a Gemma-2-shaped template: prompt_tokens counts the template's
    prompt as transformers builds it, and a system message, which that template refuses, is a 400 saying why."""
    from transformers import AutoTokenizer

    from template_folders import MODELS, save_template_llama

    folder = save_template_llama(tmp_path / "gemma", MODELS["gemma-2"])
    turns = [{"role": "user", "content": RED}, {"role": "assistant", "content": "A cherry."},
             {"role": "user", "content": "Name a fruit that is green."}]
    expected = AutoTokenizer.from_pretrained(folder).apply_chat_template(turns, add_generation_prompt=True,
                                                                         return_dict=False)
    running = start_server(str(folder), tmp_path / "server.log", "--name", "gemma")
    try:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        answer = client.chat.completions.create(model="gemma", messages=turns, temperature=0, max_tokens=3)
        assert answer.usage.prompt_tokens == len(expected) == 36
        body = json.dumps({"model": "gemma", "messages": [{"role": "system", "content": "Be brief."}, turns[0]]})
        status, refused = post(running.url + "/v1/chat/completions", body.encode())
        assert status == 400 and refused["error"]["param"] == "messages"
        assert refused["error"]["message"].endswith("refused the conversation: System role not supported")
    finally:
        assert running.stop() == 0
