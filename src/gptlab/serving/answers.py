"""Completions and chat answers over HTTP: the engine's completions sent whole or as server-sent events.

Readers wait for the engine's tokens in worker threads, one step at a time, so the event loop keeps
answering other sockets. A client that leaves, streaming or not, cancels its completions: the
engine frees their rows at the next step. A completion the server itself cancels (it is shutting down
and will not wait) ends in a 503: an error event as a stream's last, else the whole answer's status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from gptlab.generation import TextCompletion, TokenLogprob
from gptlab.serving.api import (
    APIError,
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionObject,
    ChatLogprobs,
    CompletionLogprobs,
    Delta,
    Request,
    TextChoice,
    TextCompletionObject,
    Usage,
    chat_logprobs,
    completion_logprobs,
)
from gptlab.serving.guards import ClientGone, Protection, Scope, printable, stream_failed
from gptlab.serving.metrics import Metrics
from gptlab.serving.service import Answer, EchoedPrompt, ModelService

log = logging.getLogger("gptlab.serving")
READER_THREADS = 512  # threads that may wait for the engine at once (readers of running and queued requests)


@dataclass
class Answers:
    """Start the service's completions for a request, then send them whole or streamed."""

    service: ModelService
    protection: Protection
    metrics: Metrics
    readers: anyio.CapacityLimiter  # worker threads that wait for the engine's tokens

    async def answer(self, request: Request, http: HTTPRequest, chat: bool) -> Response:
        self.service.check_model(request.model)
        if self.protection.log_prompts:
            shown = request.prompt if chat else " | ".join(str(prompt.content) for prompt in request.prompts)
            log.info("prompt id=%s text=%s", http.scope["state"]["request_id"], printable(shown, 10_000))
        answer = await run_in_threadpool(self.service.chat if chat else self.service.completion, request)
        shape = _Shape(chat, f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", int(time.time()),
                       self.service, request, answer)
        self.metrics.prompt_tokens.inc(sum(map(len, answer.prompt_ids)))
        if request.stream:
            return StreamingResponse(self._events(shape, http.scope), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "Connection": "close"})
        texts = await _until_gone(asyncio.gather(*(self._text(c) for c in answer.choices)), http)
        if any(completion.finish_reason == "cancelled" for completion in answer.choices):
            raise _stopped()
        return JSONResponse(shape.whole(texts).model_dump())

    async def _text(self, completion: TextCompletion) -> str:
        return "".join([piece async for piece in self._pieces(completion)])

    async def _pieces(self, completion: TextCompletion) -> AsyncIterator[str]:
        """The completion's text pieces, each awaited in a worker thread; cancelled if abandoned."""
        iterator, started = iter(completion), time.monotonic()
        first = None
        try:
            while (piece := await anyio.to_thread.run_sync(next, iterator, None, limiter=self.readers)) is not None:
                if first is None:
                    first = time.monotonic()
                    self.metrics.time_to_first_token.observe(first - started)
                yield piece
        finally:
            if completion.finish_reason is None:
                completion.cancel()
                log.info("client left; generation stopped after %d tokens", len(completion.ids))
            self.metrics.completion_tokens.inc(len(completion.ids))
            if first is not None and len(completion.ids) > 1:
                self.metrics.time_per_token.observe((time.monotonic() - first) / (len(completion.ids) - 1))

    async def _events(self, shape: _Shape, scope: Scope) -> AsyncIterator[bytes]:
        """Server-sent events: per choice (chat: a role chunk; an echoed prompt) a chunk per piece, then
        its finish reason; usage if asked; [DONE]. An error after the 200 is the last event instead."""
        try:
            for index, completion in enumerate(shape.answer.choices):
                for chunk in shape.opening(index):
                    yield _event(chunk)
                seen, offset = 0, shape.echoed_length(index)
                async for piece in self._pieces(completion):
                    yield _event(shape.chunk(index, piece, completion.logprobs[seen:], offset=offset))
                    seen, offset = len(completion.logprobs), offset + len(piece)
                if completion.finish_reason == "cancelled":
                    raise _stopped()
                end = [] if shape.chat else _end(completion)
                yield _event(shape.chunk(index, None, end, completion.finish_reason, offset=offset))
            if shape.request.include_usage:
                last = shape.chunk(0, None, [])
                yield _event(last.model_copy(update={"choices": [], "usage": shape.usage()}))
            yield b"data: [DONE]\n\n"
        except APIError as err:
            stream_failed(scope, err)
            yield _error_event(err)
        except Exception as err:  # noqa: BLE001 (the status line is sent: report in the stream)
            log.exception("error while streaming")
            failure = APIError(500, f"internal error: {err}", kind="server_error")
            stream_failed(scope, failure)
            yield _error_event(failure)


def _end(completion: TextCompletion) -> list[TokenLogprob]:
    """The stop id that ended a completion, scored, as /v1/completions' logprobs report it after the text's
    tokens (OpenAI's `<|endoftext|>`, vLLM's EOS): lm-eval's scoring request (`echo`, `max_tokens` 1) reads
    every entry but the last as the prompt's. Empty without logprobs or a stop id."""
    return [completion.end] if completion.end is not None else []


def _stopped() -> APIError:
    """A completion the server cancelled while its client still waited: the server is shutting down."""
    return APIError(503, "the server is shutting down and stopped this answer before its end; send the request "
                         "again", kind="server_error", code="server_shutdown")


def _error_event(err: APIError) -> bytes:
    return b"data: " + json.dumps(err.body()).encode() + b"\n\n"


def _event(payload: BaseModel) -> bytes:
    return b"data: " + payload.model_dump_json().encode() + b"\n\n"


async def _until_gone(work: Coroutine[Any, Any, Any] | asyncio.Future, http: HTTPRequest) -> Any:
    """`work`'s result, unless the client disconnects first: then the work is cancelled (its
    completions stop generating) and `ClientGone` raised."""
    job = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(http))
    done, _ = await asyncio.wait({job, watch}, return_when=asyncio.FIRST_COMPLETED)
    if job in done:
        watch.cancel()
        return job.result()
    job.cancel()
    await asyncio.gather(job, return_exceptions=True)
    raise ClientGone


async def _disconnected(http: HTTPRequest) -> None:
    while (await http.receive())["type"] != "http.disconnect":
        pass


@dataclass(frozen=True)
class _Shape:
    """The objects of one answer: the id, time and model name every one repeats, and its choices."""

    chat: bool
    ident: str
    created: int
    service: ModelService
    request: Request
    answer: Answer

    def whole(self, texts: list[str]) -> TextCompletionObject | ChatCompletionObject:
        head: dict[str, Any] = {"id": self.ident, "created": self.created, "model": self.service.name,
                                "usage": self.usage()}
        completions = list(zip(self.answer.choices, texts))
        if self.chat:
            return ChatCompletionObject(**head, choices=[
                ChatChoice(index=i, message=AssistantMessage(content=text), finish_reason=c.finish_reason,
                           logprobs=self._chat_logprobs(c.logprobs)) for i, (c, text) in enumerate(completions)])
        return TextCompletionObject(**head, choices=[
            TextChoice(index=i, text=self._echoed_text(i) + text, finish_reason=c.finish_reason,
                       logprobs=self._text_logprobs(i, [*c.logprobs, *_end(c)], echo=True))
            for i, (c, text) in enumerate(completions)])

    def opening(self, index: int) -> list[TextCompletionObject | ChatCompletionChunk]:
        """What a streamed choice starts with: chat's role chunk; an echoed prompt."""
        if self.chat:
            return [self._chat_chunk(ChatChunkChoice(index=index, delta=Delta(role="assistant", content="")))]
        if self.answer.echoed is None:
            return []
        return [self._text_chunk(TextChoice(index=index, text=self._echoed_text(index),
                                            logprobs=self._text_logprobs(index, [], echo=True)))]

    def chunk(self, index: int, text: str | None, logprobs: Sequence[TokenLogprob],
              finish_reason: str | None = None, offset: int = 0) -> TextCompletionObject | ChatCompletionChunk:
        """A streamed piece of text (with its tokens' logprobs; `offset`: the choice's characters
        before it), or (text None) a choice's end."""
        if self.chat:
            return self._chat_chunk(ChatChunkChoice(index=index, delta=Delta(content=text), finish_reason=finish_reason,
                                                    logprobs=self._chat_logprobs(logprobs) if logprobs else None))
        return self._text_chunk(TextChoice(index=index, text=text or "", finish_reason=finish_reason, logprobs=(
            self._text_logprobs(index, logprobs, offset=offset) if logprobs else None)))

    def echoed_length(self, index: int) -> int:
        """Characters of the echoed prompt choice `index`'s text starts with (0 without `echo`, and in chat)."""
        return len(self._echoed_text(index)) if not self.chat else 0

    def usage(self) -> Usage:
        """Every prompt's tokens once (however many choices continue it) and every choice's tokens."""
        return Usage.of(sum(map(len, self.answer.prompt_ids)), sum(len(c.ids) for c in self.answer.choices))

    def _echoed(self, index: int) -> EchoedPrompt | None:
        """The echoed prompt choice `index` continues (choices are prompt-major, `n` per prompt)."""
        return self.answer.echoed[index // self.request.n] if self.answer.echoed is not None else None

    def _echoed_text(self, index: int) -> str:
        echoed = self._echoed(index)
        return echoed.text if echoed is not None else ""

    def _chat_chunk(self, choice: ChatChunkChoice) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.ident, created=self.created, model=self.service.name, choices=[choice])

    def _text_chunk(self, choice: TextChoice) -> TextCompletionObject:
        return TextCompletionObject(id=self.ident, created=self.created, model=self.service.name, choices=[choice])

    def _chat_logprobs(self, tokens: Sequence[TokenLogprob]) -> ChatLogprobs | None:
        return chat_logprobs(tokens, self._piece) if self.request.logprobs is not None else None

    def _text_logprobs(self, index: int, tokens: Sequence[TokenLogprob], echo: bool = False,
                       offset: int = 0) -> CompletionLogprobs | None:
        """Choice `index`'s logprobs; with `echo` (asked for), its prompt's tokens first; `offset`: the text
        before them."""
        if self.request.logprobs is None:
            return None
        echoed = self._echoed(index) if echo else None
        if echoed is not None:
            return completion_logprobs([*echoed.scored, *tokens], self._piece, echoed.first_id)
        return completion_logprobs(tokens, self._piece, offset=offset)

    def _piece(self, token: int) -> bytes:
        return self.service.loaded.tokenizer.decode_bytes([token])
