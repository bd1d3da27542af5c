import pytest
from pydantic import ValidationError

from gptlab.generation import TokenLogprob
from gptlab.serving.api import (
    APIError,
    AssistantMessage,
    ChatBody,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionObject,
    CompletionBody,
    Delta,
    Prompt,
    TextChoice,
    TextCompletionObject,
    Usage,
    chat_logprobs,
    chat_request,
    completion_logprobs,
    completion_request,
    refusal,
)


def parse_chat_request(body: object):
    return chat_request(ChatBody.model_validate(body))


def parse_completion_request(body: object):
    return completion_request(CompletionBody.model_validate(body))


def refused(parse, body: object) -> APIError:
    """The 400 the server answers `body` with: pydantic's refusal or the request builder's."""
    try:
        parse(body)
    except ValidationError as err:
        error = refusal(err.errors())
    except APIError as err:
        error = err
    else:
        raise AssertionError(f"{body} was accepted")
    assert error.status == 400
    return error


def test_chat_request_splits_system_turns_and_the_new_message():
    request = parse_chat_request({
        "model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "developer", "content": "No emojis."},
            {"role": "user", "content": [{"type": "text", "text": "Name "}, {"type": "text", "text": "a fruit."}]},
            {"role": "user", "content": "A red one."},
        ], "max_tokens": 20, "temperature": 0, "stop": "###", "seed": 3, "top_k": 5,
        "stream": True, "stream_options": {"include_usage": True},
    })
    assert request.system == "Be brief.\n\nNo emojis."
    assert request.turns == [("Hi", "Hello.")]
    assert request.prompt == "Name a fruit.\n\nA red one."  # consecutive user messages are one turn
    assert (request.model, request.max_tokens, request.temperature, request.stop) == ("m", 20, 0.0, ("###",))
    chosen = (request.seed, request.top_k, request.top_p, request.stream, request.include_usage)
    assert chosen == (3, 5, None, True, True)


def test_defaults_follow_the_openai_api():
    request = parse_completion_request({"prompt": ["Once upon a time"]})
    assert request.prompts == [Prompt("Once upon a time", "prompt[0]")]
    assert (request.model, request.max_tokens, request.temperature, request.stop, request.stream) == \
        (None, None, None, (), False)  # None: the server's default temperature
    assert parse_chat_request({"messages": [{"role": "user", "content": "x"}],
                               "max_completion_tokens": 7}).max_tokens == 7


@pytest.mark.parametrize(("messages", "message"), [
    ([], "at least 1 item"),
    ([{"role": "assistant", "content": "hi"}], "last non-system message must come from the user"),
    ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}], "first non-system message"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "last non-system message"),
    ([{"role": "tool", "content": "a"}], "`messages[0].role`: input should be 'system'"),
    ([{"role": "user", "content": 3}], "`messages[0].content"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "only text parts"),
    (["hello"], "`messages[0]`: input should be a valid dictionary"),
])
def test_bad_messages_are_refused_with_the_reason(messages, message):
    assert message in refused(parse_chat_request, {"messages": messages}).message


@pytest.mark.parametrize(("changes", "param", "message"), [
    ({"temperature": 3}, "temperature", "temperature must be from 0 to 2 (0 = greedy), got 3"),
    ({"temperature": "hot"}, "temperature", "valid number, got 'hot'"),
    ({"top_p": 0}, "top_p", "top_p must be above 0 and at most 1, got 0"),
    ({"max_tokens": 0}, "max_tokens", "only useful with `echo`"),
    ({"max_tokens": 2.5}, "max_tokens", "valid integer"),
    ({"top_k": True}, "top_k", "valid integer"),
    ({"seed": 2**64}, "seed", "seed must be from 0 to 9223372036854775807"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4 items"),
    ({"stop": [""]}, "stop[0]", "at least 1 character"),
    ({"stream": "yes"}, "stream", "valid boolean"),
    ({"n": 9}, "n", "less than or equal to 8"),
    ({"logprobs": True}, "logprobs", "valid integer"),
    ({"logprobs": 21}, "logprobs", "logprobs must be from 0 to 20, got 21"),
    ({"presence_penalty": 0.5}, "presence_penalty", "`presence_penalty` is not supported"),
    ({"tools": [{"type": "function"}]}, "tools", "not supported"),
    ({"response_format": {"type": "xml"}}, "response_format.type", "'text', 'json_object' or 'json_schema'"),
    ({"response_format": {"type": "json_schema"}}, "response_format", 'goes with type "json_schema"'),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}}, "response_format.json_schema.name",
     "should match pattern"),
    ({"prompt": ""}, "prompt", "at least 1 character"),
    ({"prompt": ["a"] * 65}, "prompt", "at most 64 items"),
    ({"prompt": [[1]] * 9, "n": 8}, "n", "9 prompts with `n` 8 ask for 72 completions; at most 64 per request"),
    ({"prompt": [1, "a"]}, "prompt", "a list of token ids (integers) or a list of token-id lists"),
    ({"prompt": [True]}, "prompt", "must be a string, a list of strings"),
    ({"prompt": [[1], [2.0]]}, "prompt", "must be a string, a list of strings"),
    ({"prompt": []}, "prompt", "at least 1 item"),
    ({"prompt": [[1], []]}, "prompt[1]", "at least 1 item"),
    ({"prompt": [[1], [2, -3]]}, "prompt[1][1]", "greater than or equal to 0"),
    ({"prompt": ["a", ""]}, "prompt[1]", "at least 1 character"),
])
def test_bad_fields_name_the_parameter(changes, param, message):
    error = refused(parse_completion_request, {"prompt": "x", **changes})
    assert error.param.startswith(param) and message in error.message, error.message
    assert error.body() == {"error": {"message": error.message, "type": "invalid_request_error",
                                      "param": param, "code": None}}


def test_neutral_values_of_unsupported_fields_are_accepted():
    body = {"prompt": "x", "n": 1, "echo": False, "logprobs": None, "presence_penalty": 0.0, "tools": [],
            "logit_bias": {}, "response_format": {"type": "text"}, "user": "someone"}
    assert parse_completion_request(body).prompts == [Prompt("x", "prompt")]
    assert "JSON object" in refused(parse_completion_request, ["x"]).message


def test_prompt_in_each_of_openais_four_forms_is_a_list_of_prompts_with_their_places():
    """A text, texts, token ids, lists of token ids: each prompt knows where it was, for the model side's errors."""
    forms = {"Hi": [Prompt("Hi", "prompt")], ("Hi", "Yo"): [Prompt("Hi", "prompt[0]"), Prompt("Yo", "prompt[1]")],
             (5, 0, 7): [Prompt((5, 0, 7), "prompt")],
             ((5,), (6, 7)): [Prompt((5,), "prompt[0]"), Prompt((6, 7), "prompt[1]")]}
    for form, prompts in forms.items():
        sent = form if isinstance(form, str) else [list(p) if isinstance(p, tuple) else p for p in form]
        assert parse_completion_request({"prompt": sent}).prompts == prompts, form
    assert len(parse_completion_request({"prompt": [[1]] * 8, "n": 8}).prompts) == 8


def test_n_logprobs_and_echo_reach_the_request():
    completion = parse_completion_request({"prompt": "x", "n": 3, "logprobs": 2, "echo": True, "max_tokens": 0})
    assert (completion.n, completion.logprobs, completion.echo, completion.max_tokens) == (3, 2, True, 0)
    chat = parse_chat_request({"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 4})
    assert chat.logprobs == 4
    assert parse_chat_request({"messages": [{"role": "user", "content": "x"}], "logprobs": True}).logprobs == 0
    assert parse_chat_request({"messages": [{"role": "user", "content": "x"}]}).logprobs is None
    assert "needs `logprobs: true`" in refused(parse_chat_request, {"messages": [{"role": "user", "content": "x"}],
                                                                    "top_logprobs": 2}).message


def test_response_objects_have_the_openai_shapes():
    whole = ChatCompletionObject(id="c1", created=5, model="m", usage=Usage.of(3, 2), choices=[
        ChatChoice(index=0, message=AssistantMessage(content="Hi."), finish_reason="stop")])
    assert whole.model_dump() == {
        "id": "c1", "object": "chat.completion", "created": 5, "model": "m",
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."}, "logprobs": None,
                     "finish_reason": "stop"}]}
    deltas = [ChatChunkChoice(index=0, delta=delta, finish_reason=reason).model_dump()
              for delta, reason in ((Delta(role="assistant", content=""), None), (Delta(content="Hi"), None),
                                    (Delta(), "length"))]
    assert [(d["delta"], d["finish_reason"]) for d in deltas] == [
        ({"role": "assistant", "content": ""}, None), ({"content": "Hi"}, None), ({}, "length")]
    text = TextCompletionObject(id="c2", created=5, model="m", choices=[TextChoice(index=0, text="abc")])
    assert text.model_dump()["object"] == "text_completion" and text.model_dump()["choices"][0]["text"] == "abc"


def test_logprob_shapes():
    pieces = {1: b"He", 2: b"llo", 3: b"\xe2\x82"}  # the last: half a character
    tokens = [TokenLogprob(2, -0.5, ((2, -0.5), (1, -1.0))), TokenLogprob(3, -2.0, ((1, -0.1),))]
    echoed = completion_logprobs(tokens, pieces.__getitem__, first=1)
    assert echoed.model_dump() == {"tokens": ["He", "llo", "\ufffd"], "token_logprobs": [None, -0.5, -2.0],
                                   "top_logprobs": [None, {"llo": -0.5, "He": -1.0}, {"He": -0.1}],
                                   "text_offset": [0, 2, 5]}
    chat = chat_logprobs(tokens[1:], pieces.__getitem__).model_dump()["content"][0]
    assert chat["bytes"] == [0xE2, 0x82] and chat["top_logprobs"] == [{"token": "He", "logprob": -0.1,
                                                                      "bytes": [72, 101]}]
