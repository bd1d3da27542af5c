"""`gptlab serve`'s HTTP API on FastAPI: OpenAI's completions and chat (streaming with server-sent
events), /v1/models, /v1/classify, /info, /health, /metrics, /openapi.json and the chat page.

Routes only translate: `api` validates and shapes, `ModelService` generates, `guards` protects.
Generation runs in worker threads one step at a time, so the event loop keeps answering other
sockets; a client that leaves (streaming or not) cancels its completion.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from gptlab import __version__
from gptlab.generation import TextCompletion
from gptlab.serving.api import (
    APIError,
    ChatBody,
    ClassifyBody,
    CompletionBody,
    Request,
    chat_logprobs,
    chat_request,
    completion_logprobs,
    completion_object,
    completion_request,
    refusal,
    usage,
)
from gptlab.serving.guards import ASGIApp, ClientGone, Guard, Protection, printable
from gptlab.serving.metrics import Load, Metrics
from gptlab.serving.service import Answer, ModelService

log = logging.getLogger("gptlab.serving")
ROUTES = ("/", "/health", "/info", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions",
          "/v1/classify")


def make_app(service: ModelService, protection: Protection) -> ASGIApp:
    """The whole server as one ASGI app: FastAPI's routes inside the guard (and CORS, when asked for)."""
    app = FastAPI(title="gptlab", version=__version__, redoc_url=None,
                  description="An OpenAI-compatible API for a gptlab model. /docs loads Swagger UI from a CDN "
                              "(it needs internet); /openapi.json is served from here.")
    gate = _Gate()
    metrics = Metrics.create(gate.load)
    answers = _Answers(service, protection, metrics, gate)
    _add_routes(app, service, answers, metrics)
    _add_error_handlers(app)
    static = resources.files("gptlab.serving").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    inner: ASGIApp = app
    if protection.cors_origins:
        inner = CORSMiddleware(app, allow_origins=list(protection.cors_origins), allow_methods=["GET", "POST"],
                               allow_headers=["Authorization", "Content-Type"])
    return Guard(inner, protection, metrics, frozenset(ROUTES))


def _add_routes(app: FastAPI, service: ModelService, answers: _Answers, metrics: Metrics) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("gptlab.serving").joinpath("static/index.html").read_bytes())

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": service.name}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return dataclasses.asdict(service.info())

    @app.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(service)]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> dict[str, Any]:
        _check_model(service, name)
        return _model_card(service)

    @app.post("/v1/completions")
    async def completions(body: CompletionBody, http: HTTPRequest) -> Response:
        return await answers.answer(completion_request(body), http, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody, http: HTTPRequest) -> Response:
        return await answers.answer(chat_request(body), http, chat=True)

    @app.post("/v1/classify")
    async def classify(body: ClassifyBody) -> dict[str, Any]:
        results = await run_in_threadpool(service.classify, body.texts())
        return {"object": "list", "data": [{"index": i, "label": r.label, "probabilities": r.probabilities}
                                           for i, r in enumerate(results)]}


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal in OpenAI's error shape (the official clients raise their exceptions from it)."""

    @app.exception_handler(APIError)
    async def api_error(_: HTTPRequest, err: APIError) -> Response:
        return _error(err)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: HTTPRequest, err: RequestValidationError) -> Response:
        return _error(refusal(err.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(http: HTTPRequest, err: HTTPException) -> Response:
        where = f"{printable(http.method, 20)} {printable(http.url.path, 200)}"
        if err.status_code == 404:
            return _error(APIError(404, f"no route {where}; see /v1/models, /v1/completions, /v1/chat/completions, "
                                        "/v1/classify, /info, /health, /metrics and / (chat page)",
                                   kind="not_found_error"))
        if err.status_code == 405:
            return _error(APIError(405, f"{where} is not allowed; see /openapi.json for the methods"))
        if err.status_code == 400:
            return _error(APIError(400, "the request body is not valid JSON (or nests too deep, or has a number "
                                        "too long to read)"))
        return _error(APIError(err.status_code, str(err.detail)))

    @app.exception_handler(ClientGone)
    async def gone(_: HTTPRequest, __: ClientGone) -> Response:
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def internal(http: HTTPRequest, err: Exception) -> Response:
        log.exception("error answering %s %s", printable(http.method, 20), printable(http.url.path, 200))
        return _error(APIError(500, f"internal error: {err}", kind="server_error"))


def _error(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), err.status, headers={"Connection": "close"})


def _model_card(service: ModelService) -> dict[str, Any]:
    return {"id": service.name, "object": "model", "created": service.created, "owned_by": "gptlab"}


def _check_model(service: ModelService, name: str | None) -> None:
    """Any model but the one served (None: unnamed) is a 404 that names the one served."""
    if name is not None and name != service.name:
        raise APIError(404, f"model {name!r} not found; this server serves {service.name!r}", "model",
                       code="model_not_found")


class _Gate:
    """One generation at a time: the model is one (without the engine)."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiting = 0

    def load(self) -> Load:
        return Load(self.waiting, int(self.lock.locked()))

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        self.waiting += 1
        try:
            await self.lock.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self.lock.release()


@dataclass
class _Answers:
    """Completions and chat: start the service's completions, then send them whole or streamed."""

    service: ModelService
    protection: Protection
    metrics: Metrics
    gate: _Gate

    async def answer(self, request: Request, http: HTTPRequest, chat: bool) -> Response:
        _check_model(self.service, request.model)
        ident = http.scope["state"]["request_id"]
        if self.protection.log_prompts:
            log.info("prompt id=%s text=%s", ident, printable(request.prompt, 10_000))
        answer = await run_in_threadpool(self.service.chat if chat else self.service.completion, request)
        shape = _Shape(chat, f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", int(time.time()),
                       self.service.name, request, answer, self.service)
        self.metrics.prompt_tokens.inc(len(answer.prompt_ids))
        if request.stream:
            return StreamingResponse(self._events(shape), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "Connection": "close"})
        async with self.gate.turn():
            texts = [await _until_gone(self._text(completion), http) for completion in answer.choices]
        return JSONResponse({**shape.whole(texts), "usage": shape.usage()})

    async def _text(self, completion: TextCompletion) -> str:
        return "".join([piece async for piece in self._pieces(completion)])

    async def _pieces(self, completion: TextCompletion) -> AsyncIterator[str]:
        """The completion's text pieces, each generated in a worker thread; cancelled if abandoned."""
        iterator, started = iter(completion), time.monotonic()
        first = None
        try:
            while (piece := await run_in_threadpool(next, iterator, None)) is not None:
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

    async def _events(self, shape: _Shape) -> AsyncIterator[bytes]:
        """Server-sent events: per choice (chat: a role chunk) a chunk per piece, then its finish reason;
        usage if asked, [DONE]."""
        try:
            async with self.gate.turn():
                for index, completion in enumerate(shape.answer.choices):
                    for chunk in shape.opening(index):
                        yield _event(chunk)
                    seen = 0
                    async for piece in self._pieces(completion):
                        yield _event(shape.chunk(piece, index, completion.logprobs[seen:]))
                        seen = len(completion.logprobs)
                    yield _event(shape.chunk(None, index, [], completion.finish_reason))
            if shape.request.include_usage:
                yield _event({**shape.chunk(None, 0, []), "choices": [], "usage": shape.usage()})
            yield b"data: [DONE]\n\n"
        except Exception as err:  # noqa: BLE001 (the status line is sent: report in the stream)
            log.exception("error while streaming")
            yield _event(APIError(500, f"internal error: {err}", kind="server_error").body())


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def _until_gone(work: Any, http: HTTPRequest) -> str:
    """`work`'s result, unless the client disconnects first: then the work is cancelled (its
    completion stops generating) and `ClientGone` raised."""
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
    model: str
    request: Request
    answer: Answer
    service: ModelService

    def whole(self, texts: list[str]) -> dict[str, Any]:
        choices = [completion_object(self.chat, self.ident, self.created, self.model, self._echo() + text,
                                     c.finish_reason, index=i, logprobs=self._logprobs(c))["choices"][0]
                   for i, (c, text) in enumerate(zip(self.answer.choices, texts))]
        return {**completion_object(self.chat, self.ident, self.created, self.model, "", None), "choices": choices}

    def opening(self, index: int) -> list[dict[str, Any]]:
        """What a streamed choice starts with: chat's role chunk; an echoed prompt."""
        if self.chat:
            return [self.chunk("", index, [])]
        echoed = self.answer.echoed
        if echoed is None:
            return []
        scored = completion_logprobs(echoed.scored, self._piece, echoed.first_id) \
            if self.request.logprobs is not None else None
        return [completion_object(False, self.ident, self.created, self.model, echoed.text, None, True, index, scored)]

    def chunk(self, text: str | None, index: int, logprobs: list, finish_reason: str | None = None) -> dict[str, Any]:
        shaped = None
        if self.request.logprobs is not None and logprobs:
            shaped = chat_logprobs(logprobs, self._piece) if self.chat else completion_logprobs(logprobs, self._piece)
        if text is None and not self.chat:
            text = ""
        return completion_object(self.chat, self.ident, self.created, self.model, text, finish_reason, True, index,
                                 shaped)

    def usage(self) -> dict[str, int]:
        return usage(len(self.answer.prompt_ids), sum(len(c.ids) for c in self.answer.choices))

    def _echo(self) -> str:
        return self.answer.echoed.text if self.answer.echoed else ""

    def _logprobs(self, completion: TextCompletion) -> dict[str, Any] | None:
        if self.request.logprobs is None:
            return None
        if self.chat:
            return chat_logprobs(completion.logprobs, self._piece)
        echoed = self.answer.echoed
        if echoed is None:
            return completion_logprobs(completion.logprobs, self._piece)
        return completion_logprobs([*echoed.scored, *completion.logprobs], self._piece, echoed.first_id)

    def _piece(self, token: int) -> bytes:
        return self.service.loaded.tokenizer.decode_bytes([token])
