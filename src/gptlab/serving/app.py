"""`gptlab serve`'s HTTP API on FastAPI: OpenAI's completions and chat (streaming with server-sent
events), /v1/models, /v1/classify, /info, /health, /metrics, /openapi.json and the chat page.

Routes only translate: `api` validates and shapes, `ModelService` starts completions on the engine,
`answers` sends them whole or streamed, `guards` protects every request before a route sees it.
"""

from __future__ import annotations

import logging
from importlib import resources

import anyio
from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from gptlab import __version__
from gptlab.serving.answers import READER_THREADS, Answers
from gptlab.serving.api import (
    APIError,
    ChatBody,
    ChatCompletionObject,
    ClassificationList,
    ClassifyBody,
    CompletionBody,
    ModelCard,
    ModelList,
    TextCompletionObject,
    chat_request,
    completion_request,
    refusal,
)
from gptlab.serving.guards import ASGIApp, ClientGone, Guard, Protection, printable
from gptlab.serving.headers import chat_page_policy, swagger_policy
from gptlab.serving.metrics import Load, Metrics
from gptlab.serving.service import ModelService, ServerInfo

log = logging.getLogger("gptlab.serving")
ROUTES = ("/", "/health", "/info", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions",
          "/v1/classify")


def make_app(service: ModelService, protection: Protection) -> ASGIApp:
    """The whole server as one ASGI app: FastAPI's routes inside the guard (and CORS, when asked for)."""
    app = FastAPI(title="gptlab", version=__version__, redoc_url=None, docs_url=None,
                  description="An OpenAI-compatible API for a gptlab model. /docs loads Swagger UI from a CDN "
                              "(it needs internet); /openapi.json is served from here.")
    metrics = Metrics.create(lambda: _load(service))
    answers = Answers(service, protection, metrics, anyio.CapacityLimiter(READER_THREADS))
    _add_routes(app, service, answers, metrics)
    _add_error_handlers(app)
    static = resources.files("gptlab.serving").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    inner: ASGIApp = app
    if protection.cors_origins:
        inner = CORSMiddleware(app, allow_origins=list(protection.cors_origins), allow_methods=["GET", "POST"],
                               allow_headers=["Authorization", "Content-Type"])
    return Guard(inner, protection, metrics, frozenset(ROUTES))


def _add_routes(app: FastAPI, service: ModelService, answers: Answers, metrics: Metrics) -> None:
    chat_page = resources.files("gptlab.serving").joinpath("static/index.html").read_text(encoding="utf-8")
    chat_headers = {"Content-Security-Policy": chat_page_policy(chat_page)}
    swagger = get_swagger_ui_html(openapi_url="/openapi.json", title="gptlab - Swagger UI").body.decode()
    swagger_headers = {"Content-Security-Policy": swagger_policy(swagger)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(chat_page, headers=chat_headers)

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(swagger, headers=swagger_headers)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": service.name}

    @app.get("/info", response_model=ServerInfo)
    async def info() -> ServerInfo:
        return service.info()

    @app.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(data=[_model_card(service)])

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> ModelCard:
        service.check_model(name)
        return _model_card(service)

    @app.post("/v1/completions", response_model=TextCompletionObject,
              responses={200: {"content": {"text/event-stream": {}}, "description": "with stream: true, chunks"}})
    async def completions(body: CompletionBody, http: HTTPRequest) -> Response:
        return await answers.answer(completion_request(body), http, chat=False)

    @app.post("/v1/chat/completions", response_model=ChatCompletionObject,
              responses={200: {"content": {"text/event-stream": {}}, "description": "with stream: true, chunks"}})
    async def chat(body: ChatBody, http: HTTPRequest) -> Response:
        return await answers.answer(chat_request(body), http, chat=True)

    @app.post("/v1/classify")
    async def classify(body: ClassifyBody) -> ClassificationList:
        return ClassificationList(data=await run_in_threadpool(service.classify, body.texts()))


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
    headers = {"Connection": "close"} | ({"Retry-After": str(err.retry_after)} if err.retry_after else {})
    return JSONResponse(err.body(), err.status, headers=headers)


def _load(service: ModelService) -> Load:
    stats = service.engine.stats()
    return Load(stats.queued, stats.running)


def _model_card(service: ModelService) -> ModelCard:
    return ModelCard(id=service.name, created=service.created)
