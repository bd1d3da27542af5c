import pytest

from gptlab.serving.api import APIError, completion_object, parse_chat_request, parse_completion_request


def refused(parse, body: object) -> APIError:
    with pytest.raises(APIError) as caught:
        parse(body)
    assert caught.value.status == 400
    return caught.value


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
    assert request.prompt == "Once upon a time"
    assert (request.model, request.max_tokens, request.temperature, request.stop, request.stream) == \
        (None, None, None, (), False)  # None: the server's default temperature
    assert parse_chat_request({"messages": [{"role": "user", "content": "x"}],
                               "max_completion_tokens": 7}).max_tokens == 7


@pytest.mark.parametrize(("messages", "message"), [
    ([], "non-empty list"),
    ([{"role": "assistant", "content": "hi"}], "last non-system message must come from the user"),
    ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}], "first non-system message"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "last non-system message"),
    ([{"role": "tool", "content": "a"}], "messages[0].role must be one of"),
    ([{"role": "user", "content": 3}], "messages[0].content must be a string"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "only text parts"),
    (["hello"], "messages[0] must be an object"),
])
def test_bad_messages_are_refused_with_the_reason(messages, message):
    assert message in refused(parse_chat_request, {"messages": messages}).message


@pytest.mark.parametrize(("changes", "param", "message"), [
    ({"temperature": 3}, "temperature", "from 0 to 2, got 3"),
    ({"temperature": "hot"}, "temperature", "must be a number"),
    ({"top_p": 0}, "top_p", "above 0"),
    ({"max_tokens": 0}, "max_tokens", "integer >= 1, got 0"),
    ({"max_tokens": 2.5}, "max_tokens", "integer >= 1"),
    ({"top_k": True}, "top_k", "must be an integer"),
    ({"seed": 2**64}, "seed", "integer from 0 to 9223372036854775807"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "up to 4"),
    ({"stop": [""]}, "stop", "non-empty string"),
    ({"stream": "yes"}, "stream", "true or false"),
    ({"n": 2}, "n", "`n` is not supported"),
    ({"logprobs": True}, "logprobs", "`logprobs` is not supported"),
    ({"presence_penalty": 0.5}, "presence_penalty", "not supported"),
    ({"tools": [{"type": "function"}]}, "tools", "not supported"),
    ({"prompt": ""}, "prompt", "non-empty string"),
    ({"prompt": [1, 2, 3]}, "prompt", "token-id prompts are not supported"),
])
def test_bad_fields_name_the_parameter(changes, param, message):
    error = refused(parse_completion_request, {"prompt": "x", **changes})
    assert error.param == param and message in error.message
    assert error.body() == {"error": {"message": error.message, "type": "invalid_request_error",
                                      "param": param, "code": None}}


def test_neutral_values_of_unsupported_fields_are_accepted():
    body = {"prompt": "x", "n": 1, "echo": False, "logprobs": None, "presence_penalty": 0.0, "tools": [],
            "logit_bias": {}}
    assert parse_completion_request(body).prompt == "x"
    assert "JSON object" in refused(parse_completion_request, ["x"]).message


def test_response_objects_have_the_openai_shapes():
    assert completion_object(True, "c1", 5, "m", "Hi.", "stop") == {
        "id": "c1", "object": "chat.completion", "created": 5, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."}, "logprobs": None,
                     "finish_reason": "stop"}]}
    deltas = [completion_object(True, "c1", 5, "m", text, reason, chunk=True)["choices"][0]
              for text, reason in (("", None), ("Hi", None), (None, "length"))]
    assert [(d["delta"], d["finish_reason"]) for d in deltas] == [
        ({"role": "assistant", "content": ""}, None), ({"content": "Hi"}, None), ({}, "length")]
    text = completion_object(False, "c2", 5, "m", "abc", None, chunk=True)
    assert text["object"] == "text_completion" and text["choices"][0]["text"] == "abc"
