"""The OpenAI API's request and response shapes: validation at the HTTP boundary, and nothing else.

Requests are pydantic models (they also make `/openapi.json`); a refused one becomes an `APIError`
naming the field, in OpenAI's error shape. A request that asks for something this server cannot
do (tools, penalties) gets a clear 400 naming the field, rather than an answer that
silently ignores it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from gptlab.fields import OutOfRange, range_check
from gptlab.generation import GenerationSettings, TokenLogprob
from gptlab.grammar import OutputFormat
from gptlab.tokenizer.bpe import refuse_surrogates

MAX_STOP_STRINGS = 4  # as in the OpenAI API
MAX_CHOICES = 8  # `n`: completions per request, bounding the work one request asks for
MAX_PROMPTS = 64  # prompts per /v1/completions request, times `n`: the completions one batch asks for
MAX_CLASSIFY_INPUTS = 64  # texts per /v1/classify request, for the same reason
# Fields whose only supported value is the API's default; anything else is refused, not ignored.
UNSUPPORTED: dict[str, Any] = {
    "best_of": 1, "suffix": None, "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": None,
    "tools": None, "functions": None, "tool_choice": None, "function_call": None,
}

Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Int = Annotated[int, Field(strict=True)]


def _whole_characters(text: str) -> str:
    refuse_surrogates(text)
    return text


def _not_empty(text: str) -> str:
    if not text:
        raise ValueError("should have at least 1 character")
    return text


def _checked(kind: type, setting: str, name: str | None = None) -> Any:
    """A request field checked by `GenerationSettings`' own range for `setting` (`name`: its name in the
    request where it differs), so a value out of range gets the sentence `gptlab generate` and the Python
    API give; the range is also written into `/openapi.json`."""
    bounds = next(f for f in dataclasses.fields(GenerationSettings) if f.name == setting).metadata["bounds"]
    schema = {key: value for key, value in (("minimum", bounds.low), ("maximum", bounds.high)) if value is not None}
    if bounds.above:
        schema["exclusiveMinimum"] = schema.pop("minimum")
    finite = {"allow_inf_nan": False} if kind is float else {}
    return Annotated[kind, Field(strict=True, json_schema_extra=schema, **finite),
                     AfterValidator(range_check(GenerationSettings, setting, name))]


MaxTokens = _checked(int, "max_new_tokens", "max_tokens")
Temperature = _checked(float, "temperature")
TopP = _checked(float, "top_p")
TopK = _checked(int, "top_k")
Seed = _checked(int, "seed")
Logprobs = _checked(int, "logprobs")
TopLogprobs = _checked(int, "logprobs", "top_logprobs")


# Every text field of a request: JSON can spell a lone surrogate ("\ud83d" without its pair), which is
# no character and has no UTF-8 bytes; each field refuses it by name and position, the same way.
Text = Annotated[str, AfterValidator(_whole_characters)]
# checked by a validator too: a length constraint on the string would make pydantic parse it strictly and
# refuse a lone surrogate with its own message, and one after the validator calls the text "1 item"
NonEmptyText = Annotated[str, AfterValidator(_whole_characters), AfterValidator(_not_empty)]


class APIError(Exception):
    """A request the server refuses: HTTP status plus OpenAI's error body."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error", code: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code
        self.retry_after = retry_after  # seconds, sent as the Retry-After header (429, 503)

    def body(self) -> dict[str, Any]:
        """OpenAI's error object, which the official clients turn into their exceptions."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    include_usage: Annotated[bool, Field(strict=True)] = False  # a last chunk with the token counts


class JSONSchemaFormat(BaseModel):
    """`response_format.json_schema`: the JSON Schema an answer must validate against (always enforced:
    the answer is decoded under it, so `strict` changes nothing)."""

    model_config = ConfigDict(populate_by_name=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]  # OpenAI's rule for the name
    description: Text | None = None
    json_schema: dict[str, Any] = Field(default_factory=dict, alias="schema")  # {}: any JSON value
    strict: Annotated[bool, Field(strict=True)] | None = None


class ResponseFormat(BaseModel):
    """Plain text, any JSON object (JSON mode) or JSON under a schema: the JSON kinds are decoded under a
    grammar, so the answer parses unless `max_tokens` cuts it short (finish_reason "length")."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError('`response_format.json_schema` goes with type "json_schema", and only with it')
        return self

    def output(self) -> OutputFormat | None:
        """What the answer must be; None for plain text."""
        if self.type == "text":
            return None
        return OutputFormat(self.type, self.json_schema.json_schema if self.json_schema else None)


class Sampling(BaseModel):
    """What completions and chat requests share: sampling, stopping, streaming."""

    model_config = ConfigDict(extra="ignore")  # fields clients add (user, metadata, store) change nothing

    model: Text | None = None
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    seed: Seed | None = None
    stop: NonEmptyText | Annotated[list[NonEmptyText], Field(max_length=MAX_STOP_STRINGS)] | None = None
    stream: Annotated[bool, Field(strict=True)] = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(strict=True, ge=1, le=MAX_CHOICES)] = 1
    response_format: ResponseFormat | None = None
    best_of: Any = None
    suffix: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    logit_bias: Any = None
    tools: Any = None
    functions: Any = None
    tool_choice: Any = None
    function_call: Any = None

    @field_validator(*UNSUPPORTED)
    @classmethod
    def _default_only(cls, value: Any, info: Any) -> Any:
        default = UNSUPPORTED[info.field_name]
        if value not in (None, [], {}) and value != default:  # absent, empty or the default is fine
            raise ValueError(f"`{info.field_name}` is not supported by this server (only {default!r})")
        return value


TokenIds = Annotated[list[Annotated[int, Field(strict=True, ge=0)]], Field(min_length=1)]


class CompletionBody(Sampling):
    """`POST /v1/completions`: `prompt` in any of OpenAI's four forms (a text, texts, token ids, lists of
    token ids); lm-evaluation-harness sends batches of token ids and scores exactly those tokens."""

    prompt: (NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1, max_length=MAX_PROMPTS)]
             | TokenIds | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)])

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_of_four_forms(cls, prompt: Any) -> Any:
        """A shape that is none of the four is named as such (each form alone would call it "not a string")."""
        def ids(value: Any) -> bool:
            return isinstance(value, list) and all(type(i) is int for i in value)  # not bool: True is no token

        if not (isinstance(prompt, str) or ids(prompt) or isinstance(prompt, list) and (
                all(isinstance(p, str) for p in prompt) or all(ids(p) for p in prompt))):
            raise ValueError("`prompt` must be a string, a list of strings, a list of token ids (integers) or a list "
                             "of token-id lists")
        return prompt
    logprobs: Logprobs | None = None
    echo: Annotated[bool, Field(strict=True)] = False


class TextPart(BaseModel):
    type: Literal["text"]
    text: Text


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]  # "developer" is OpenAI's newer name for system
    content: Text | list[TextPart]

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, content: Any) -> Any:
        if isinstance(content, list) and not all(isinstance(part, dict) and part.get("type") == "text"
                                                 for part in content):
            raise ValueError('only text parts ({"type": "text", "text": ...}) are supported')
        return content

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatBody(Sampling):
    """`POST /v1/chat/completions`."""

    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(strict=True, ge=1)] | None = None
    logprobs: Annotated[bool, Field(strict=True)] = False
    top_logprobs: TopLogprobs | None = None

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> ChatBody:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("`top_logprobs` needs `logprobs: true`")
        return self


class ClassifyBody(BaseModel):
    """`POST /v1/classify`: one text or a list of them."""

    input: NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1, max_length=MAX_CLASSIFY_INPUTS)]

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


@dataclass(frozen=True)
class Prompt:
    """One prompt of a completions request: a text to tokenize, or token ids used exactly as sent."""

    content: str | tuple[int, ...]
    param: str  # where the request holds it, for errors: "prompt" or "prompt[2]"


@dataclass
class Request:
    """A validated completion or chat request, in the terms the model service works in."""

    model: str | None
    max_tokens: int | None  # None: the server's default, cut to what fits
    temperature: float | None  # None (and top_p, top_k None): the server's defaults (`gptlab serve` flags)
    top_p: float | None
    top_k: int | None
    seed: int | None  # choice i of n samples with seed + i
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with token counts
    n: int = 1
    output: OutputFormat | None = None  # response_format: JSON (under a schema), decoded under a grammar
    logprobs: int | None = None  # None: none; k: each token's log-probability and k alternatives
    echo: bool = False  # completions: the answer repeats the prompt (with its logprobs when asked)
    prompts: list[Prompt] = field(default_factory=list)  # completions: each continued n times
    prompt: str = ""  # chat: the latest user message
    system: str = ""  # chat: system/developer messages, joined
    turns: list[tuple[str, str]] = field(default_factory=list)  # chat: earlier (user, assistant) pairs


def completion_request(body: CompletionBody) -> Request:
    """A `/v1/completions` request: one prompt or a batch, each answered with `n` choices."""
    request = _common(body, body.max_tokens)
    request.prompts = _prompts(body.prompt)
    if len(request.prompts) * request.n > MAX_PROMPTS:
        raise APIError(400, f"{len(request.prompts)} prompts with `n` {request.n} ask for "
                            f"{len(request.prompts) * request.n} completions; at most {MAX_PROMPTS} per request", "n")
    request.logprobs, request.echo = body.logprobs, body.echo
    if request.max_tokens == 0 and not request.echo:
        raise APIError(400, "`max_tokens` 0 is only useful with `echo` (scoring the prompt)", "max_tokens")
    return request


def _prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[Prompt]:
    """The four forms as a list of prompts (lists are never empty: the body's validation says so)."""
    if isinstance(prompt, str):
        return [Prompt(prompt, "prompt")]
    items: list[Any] = list(prompt)
    if isinstance(items[0], int):  # one prompt of token ids
        return [Prompt(tuple(items), "prompt")]
    return [Prompt(p if isinstance(p, str) else tuple(p), f"prompt[{i}]") for i, p in enumerate(items)]


def chat_request(body: ChatBody) -> Request:
    """A `/v1/chat/completions` request: system messages, alternating user/assistant turns, a user message last."""
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if max_tokens == 0:
        raise APIError(400, "`max_tokens` must be at least 1 in a chat request", "max_tokens")
    request = _common(body, max_tokens)
    request.logprobs = (body.top_logprobs or 0) if body.logprobs else None
    system: list[str] = []
    dialog: list[tuple[str, str]] = []  # (role, text), consecutive messages of one role joined
    for message in body.messages:
        text = message.text()
        if message.role in ("system", "developer"):
            system.append(text)
        elif dialog and dialog[-1][0] == message.role:
            dialog[-1] = (message.role, dialog[-1][1] + "\n\n" + text)
        else:
            dialog.append((message.role, text))
    if not dialog or dialog[-1][0] != "user":
        raise APIError(400, "the last non-system message must come from the user", "messages")
    if dialog[0][0] != "user":
        raise APIError(400, "the first non-system message must come from the user", "messages")
    request.system = "\n\n".join(system)
    request.turns = [(dialog[i][1], dialog[i + 1][1]) for i in range(0, len(dialog) - 1, 2)]
    request.prompt = dialog[-1][1]
    return request


def _common(body: Sampling, max_tokens: int | None) -> Request:
    stops = [body.stop] if isinstance(body.stop, str) else body.stop or []
    return Request(
        model=body.model, max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
        seed=body.seed, stop=tuple(stops), stream=body.stream, n=body.n,
        output=body.response_format.output() if body.response_format else None,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
    )


def refusal(errors: Sequence[Any]) -> APIError:
    """A validation error of pydantic's (or FastAPI's) as a 400 naming the field.

    A field that takes one of several shapes (`stop`: a string or a list) fails once per shape; the
    failure that is not a mere type mismatch says what was wrong with the shape the client chose.
    """
    error = next((e for e in errors if not str(e.get("type")).endswith("_type")), errors[0])
    loc = [part for part in error.get("loc", ()) if isinstance(part, int) or part in FIELD_NAMES]
    param = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".") or None
    kind = error.get("type")
    if kind == "json_invalid":
        return APIError(400, f"the request body is not valid JSON: {error.get('ctx', {}).get('error', '')}")
    if not loc and kind in ("missing", "model_attributes_type", "dict_type", "model_type"):
        return APIError(400, "the request body must be a JSON object (send Content-Type: application/json)")
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    # the validator's own sentence names the field; a setting's range is said as the CLI and the Python API say it
    if message.startswith("`") or isinstance(error.get("ctx", {}).get("error"), OutOfRange):
        return APIError(400, message, param)
    got = "" if kind == "missing" else f", got {_short(error.get('input'))}"
    return APIError(400, f"`{param}`: {message[0].lower()}{message[1:]}{got}", param)


FIELD_NAMES = frozenset(f.alias or name for model in (CompletionBody, ChatBody, Message, TextPart, StreamOptions,
                                                      ResponseFormat, JSONSchemaFormat, ClassifyBody)
                        for name, f in model.model_fields.items())


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class Usage(BaseModel):
    """The token counts every answer reports (clients use them for cost and context budgeting)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens)


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]  # the token's exact bytes (its text may hold half a character)


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob]
    refusal: None = None


class CompletionLogprobs(BaseModel):
    """Parallel lists: each token, its log-probability, the top alternatives, where its text starts."""

    tokens: list[str]
    token_logprobs: list[float | None]  # None: an echoed prompt's first token, which nothing predicts
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class TextChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None  # "stop" | "length" | "cancelled"; None in a stream's middle chunks


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class Delta(BaseModel):
    """A streamed chat chunk's new text: the first carries the role, the last nothing."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer
    def _present(self) -> dict[str, str]:
        return {name: value for name, value in (("role", self.role), ("content", self.content)) if value is not None}


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class AnswerObject(BaseModel):
    """What every answer object repeats: its id, creation time and the model that wrote it."""

    id: str
    created: int
    model: str
    usage: Usage | None = None  # streamed chunks: only the last, with stream_options.include_usage


class TextCompletionObject(AnswerObject):
    """`/v1/completions`: the whole answer, and each streamed chunk."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[TextChoice]


class ChatCompletionObject(AnswerObject):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]


class ChatCompletionChunk(AnswerObject):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "gptlab"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Classification(BaseModel):
    index: int
    label: str  # the most likely class
    probabilities: dict[str, float]  # every class's


class ClassificationList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Classification]


def chat_logprobs(tokens: Sequence[TokenLogprob], piece: Callable[[int], bytes]) -> ChatLogprobs:
    """Chat's `logprobs`: per token its text, log-probability, bytes and the top alternatives."""

    def entry(token: int, logprob: float) -> TopLogprob:
        raw = piece(token)
        return TopLogprob(token=raw.decode("utf-8", errors="replace"), logprob=logprob, bytes=list(raw))

    return ChatLogprobs(content=[ChatTokenLogprob(**entry(t.id, t.logprob).model_dump(),
                                                  top_logprobs=[entry(i, lp) for i, lp in t.top]) for t in tokens])


def completion_logprobs(tokens: Sequence[TokenLogprob], piece: Callable[[int], bytes],
                        first: int | None = None, offset: int = 0) -> CompletionLogprobs:
    """Completions' `logprobs`: parallel lists of tokens, log-probabilities, alternatives and text offsets.

    `first`: an echoed prompt's first token, which nothing before it predicts (its log-probability
    and alternatives are null, as OpenAI reports them).
    """

    def text(token: int) -> str:
        return piece(token).decode("utf-8", errors="replace")

    texts = ([text(first)] if first is not None else []) + [text(t.id) for t in tokens]
    offsets = []
    for token_text in texts:
        offsets.append(offset)
        offset += len(token_text)
    lead: list[None] = [None] if first is not None else []
    return CompletionLogprobs(tokens=texts, token_logprobs=[*lead, *(t.logprob for t in tokens)],
                              top_logprobs=[*lead, *({text(i): lp for i, lp in t.top} for t in tokens)],
                              text_offset=offsets)
