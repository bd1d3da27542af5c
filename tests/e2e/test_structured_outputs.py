"""`response_format` through `gptlab serve` with the official `openai` client: random weights, valid JSON."""

import json
from collections.abc import Iterator

import jsonschema
import openai
import pytest

from e2e.servers import Server, start_server

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 3},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                           "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}},
          "required": ["name", "age", "tags"], "additionalProperties": False}
# the longest answer PERSON allows is under 90 bytes (each name character an escaped surrogate pair), and
# every token is at least one byte: a strict answer ends within this budget
BUDGET = 90
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
ASK = [{"role": "user", "content": "Who?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    running = start_server("gpt-tiny", tmp_path_factory.mktemp("structured") / "server.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


def valid(text: str) -> dict:
    document = json.loads(text)
    jsonschema.validate(document, PERSON)
    return document


def test_strict_json_schema_answers_parse_and_validate_in_chat_and_completions(client):
    chat = client.chat.completions.create(model="gpt-tiny", messages=ASK, response_format=SCHEMA_FORMAT,
                                          max_tokens=BUDGET, n=3, seed=1)
    for choice in chat.choices:
        assert choice.finish_reason == "stop"
        valid(choice.message.content)
    completion = client.completions.create(model="gpt-tiny", prompt="A person:", max_tokens=BUDGET, seed=2,
                                           extra_body={"response_format": SCHEMA_FORMAT})
    assert completion.choices[0].finish_reason == "stop"
    valid(completion.choices[0].text)


def test_streamed_json_schema_answers_are_the_whole_answers_in_pieces(client):
    whole = client.chat.completions.create(model="gpt-tiny", messages=ASK, response_format=SCHEMA_FORMAT,
                                           max_tokens=BUDGET, seed=5)
    chunks = list(client.chat.completions.create(model="gpt-tiny", messages=ASK, response_format=SCHEMA_FORMAT,
                                                 max_tokens=BUDGET, seed=5, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == whole.choices[0].message.content and chunks[-1].choices[0].finish_reason == "stop"
    valid(streamed)
    pieces = list(client.completions.create(model="gpt-tiny", prompt="A person:", max_tokens=BUDGET, seed=6,
                                            stream=True, extra_body={"response_format": SCHEMA_FORMAT}))
    valid("".join(p.choices[0].text for p in pieces))


def test_json_mode_writes_an_object_unless_the_budget_runs_out(client):
    """Any object has no length bound, so a random model may be cut short: finish_reason says so."""
    for stream in (False, True):
        answer = client.chat.completions.create(model="gpt-tiny", messages=ASK, max_tokens=16, seed=3, n=2,
                                                response_format={"type": "json_object"}, stream=stream)
        if stream:
            texts, reasons = ["", ""], ["", ""]
            for chunk in answer:
                for choice in chunk.choices:
                    texts[choice.index] += choice.delta.content or ""
                    reasons[choice.index] = choice.finish_reason or reasons[choice.index]
        else:
            texts = [c.message.content for c in answer.choices]
            reasons = [c.finish_reason for c in answer.choices]
        for text, reason in zip(texts, reasons):
            assert text.startswith("{") and reason in ("stop", "length")
            if reason == "stop":
                assert isinstance(json.loads(text), dict)


def test_a_schema_that_cannot_compile_is_a_400_naming_the_part(client):
    broken = {"type": "object", "properties": {"when": {"$ref": "#/$defs/date"}}}
    with pytest.raises(openai.BadRequestError, match="/\\$defs/date") as refused:
        client.chat.completions.create(model="gpt-tiny", messages=ASK, response_format={
            "type": "json_schema", "json_schema": {"name": "event", "schema": broken}})
    assert refused.value.body["param"] == "response_format.json_schema.schema"
    with pytest.raises(openai.BadRequestError, match="json_schema") as refused:
        client.chat.completions.create(model="gpt-tiny", messages=ASK, response_format={"type": "json_schema"})
    assert refused.value.body["param"] == "response_format"
