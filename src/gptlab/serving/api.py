"""The OpenAI API's request and response shapes: validation at the HTTP boundary, and nothing else.

Pure functions on parsed JSON, so every rule is tested without a socket. A request that asks
for something this server cannot do (several choices, log-probabilities, tools) gets a clear
400 naming the field, rather than an answer that silently ignores it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MAX_STOP_STRINGS = 4  # as in the OpenAI API
ROLES = ("system", "developer", "user", "assistant")  # "developer" is OpenAI's newer name for system
# Fields whose only supported value is the API's default; anything else is refused, not ignored.
UNSUPPORTED: dict[str, Any] = {
    "n": 1, "best_of": 1, "echo": False, "logprobs": None, "top_logprobs": None, "suffix": None,
    "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": None, "tools": None, "functions": None,
    "tool_choice": None, "function_call": None,
}


class APIError(Exception):
    """A request the server refuses: HTTP status plus OpenAI's error body."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error", code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code

    def body(self) -> dict[str, Any]:
        """OpenAI's error object, which the official clients turn into their exceptions."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Request:
    """A validated completion or chat request. `max_tokens` None means "as many as fit"."""

    model: str | None
    max_tokens: int | None
    temperature: float | None  # None (and top_p, top_k None): the server's defaults (`gptlab serve` flags)
    top_p: float | None
    top_k: int | None
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with token counts
    prompt: str = ""  # completions: the text to continue; chat: the latest user message
    system: str = ""  # chat: system/developer messages, joined
    turns: list[tuple[str, str]] = field(default_factory=list)  # chat: earlier (user, assistant) pairs


def parse_completion_request(body: Any) -> Request:
    """A `/v1/completions` body: `prompt` is one string (or a list holding one)."""
    request = _common(_object(body))
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise APIError(400, "`prompt` must be a non-empty string (one prompt per request; token-id prompts "
                            "are not supported)", "prompt")
    request.prompt = prompt
    return request


def parse_chat_request(body: Any) -> Request:
    """A `/v1/chat/completions` body: system messages, alternating user/assistant turns, a user message last."""
    request = _common(_object(body))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "`messages` must be a non-empty list of {role, content} objects", "messages")
    system: list[str] = []
    dialog: list[tuple[str, str]] = []  # (role, text), consecutive messages of one role joined
    for index, message in enumerate(messages):
        role, text = _message(message, index)
        if role in ("system", "developer"):
            system.append(text)
        elif dialog and dialog[-1][0] == role:
            dialog[-1] = (role, dialog[-1][1] + "\n\n" + text)
        else:
            dialog.append((role, text))
    if not dialog or dialog[-1][0] != "user":
        raise APIError(400, "the last non-system message must come from the user", "messages")
    if dialog[0][0] != "user":
        raise APIError(400, "the first non-system message must come from the user", "messages")
    request.system = "\n\n".join(system)
    request.turns = [(dialog[i][1], dialog[i + 1][1]) for i in range(0, len(dialog) - 1, 2)]
    request.prompt = dialog[-1][1]
    return request


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _common(body: dict[str, Any]) -> Request:
    for name, default in UNSUPPORTED.items():
        if body.get(name) not in (default, None, False, 0, {}, []):  # absent, empty or the default is fine
            raise APIError(400, f"`{name}` is not supported by this server (only {default!r})", name)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise APIError(400, "`model` must be a string", "model")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise APIError(400, "`stream_options` must be an object", "stream_options")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    return Request(
        model=model,
        max_tokens=_integer(max_tokens, "max_tokens", 1) if max_tokens is not None else None,
        temperature=_number(body["temperature"], "temperature", 0.0, 2.0)
        if body.get("temperature") is not None else None,
        top_p=_top_p(body.get("top_p")),
        top_k=_integer(body["top_k"], "top_k", 1) if body.get("top_k") is not None else None,
        seed=_integer(body["seed"], "seed", 0, 2**63 - 1) if body.get("seed") is not None else None,
        stop=_stop(body.get("stop")),
        stream=_boolean(body.get("stream", False), "stream"),
        include_usage=_boolean(stream_options.get("include_usage", False), "stream_options.include_usage"),
    )


def _message(message: Any, index: int) -> tuple[str, str]:
    """(role, text) of `messages[index]`; content may be a string or a list of text parts."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise APIError(400, f"{where} must be an object with `role` and `content`", where)
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        raise APIError(400, f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}", f"{where}.role")
    if isinstance(content, list):
        if not all(isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
                   for part in content):
            raise APIError(400, f"{where}.content: only text parts ({{\"type\": \"text\", \"text\": ...}}) "
                                "are supported", f"{where}.content")
        content = "".join(part["text"] for part in content)
    if not isinstance(content, str):
        raise APIError(400, f"{where}.content must be a string", f"{where}.content")
    return role, content


def _integer(value: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low) \
            or (high is not None and value > high):
        bounds = f" from {low} to {high}" if high is not None else f" >= {low}" if low is not None else ""
        raise APIError(400, f"`{name}` must be an integer{bounds}, got {value!r}", name)
    return value


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low <= value <= high:
        raise APIError(400, f"`{name}` must be a number from {low:g} to {high:g}, got {value!r}", name)
    return float(value)


def _top_p(value: Any) -> float | None:
    if value is None:
        return None
    top_p = _number(value, "top_p", 0.0, 1.0)
    if top_p == 0:
        raise APIError(400, "`top_p` must be above 0 (use temperature 0 for greedy decoding)", "top_p")
    return top_p


def _boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise APIError(400, f"`{name}` must be true or false, got {value!r}", name)
    return value


def _stop(value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value if value is not None else []
    if not isinstance(stops, list) or len(stops) > MAX_STOP_STRINGS \
            or not all(isinstance(stop, str) and stop for stop in stops):
        raise APIError(400, f"`stop` must be a non-empty string or a list of up to {MAX_STOP_STRINGS} of them",
                       "stop")
    return tuple(stops)


MAX_CLASSIFY_INPUTS = 64  # texts per /v1/classify request: bounds the work one request asks for


def parse_classify_request(body: Any) -> list[str]:
    """A `/v1/classify` body: `input` is one text or a list of up to MAX_CLASSIFY_INPUTS texts."""
    texts = _object(body).get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not 0 < len(texts) <= MAX_CLASSIFY_INPUTS \
            or not all(isinstance(text, str) and text for text in texts):
        raise APIError(400, f"`input` must be a non-empty string or a list of 1 to {MAX_CLASSIFY_INPUTS} of them",
                       "input")
    return texts


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The token counts every answer reports (clients use them for cost and context budgeting)."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_object(chat: bool, ident: str, created: int, model: str, text: str | None,
                      finish_reason: str | None, chunk: bool = False) -> dict[str, Any]:
    """One completion, or one streamed chunk of it, in the shape the OpenAI clients parse.

    A chat chunk carries `delta`: the first one the role, the others text, the last only the
    finish reason (`text` None).
    """
    if not chat:
        choice: dict[str, Any] = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        kind = "text_completion"
    elif chunk:
        delta = {} if text is None else {"content": text} if text else {"role": "assistant", "content": ""}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": finish_reason}
        kind = "chat.completion"
    return {"id": ident, "object": kind, "created": created, "model": model, "choices": [choice]}
