"""`gptlab serve`: an OpenAI-compatible HTTP API (streaming with server-sent events) and a chat page.

Built on the standard library's threaded HTTP server, so every line between the socket and the
model is here to read. Connections are served in parallel; generation runs one request at a time
(the model is one), the others waiting for it. A client that disconnects mid-stream
stops its generation at the next token.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from gptlab import __version__
from gptlab.generation import Completion
from gptlab.serving.api import (
    APIError,
    Request,
    completion_object,
    parse_chat_request,
    parse_classify_request,
    parse_completion_request,
    usage,
)
from gptlab.serving.service import ModelService

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1 << 20


def make_server(service: ModelService, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server bound to host:port (0 picks a free port); `serve_forever()` runs it."""
    handler = type("Handler", (_Handler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True  # an open stream does not keep the process alive at Ctrl-C
    return server


class _Handler(BaseHTTPRequestHandler):
    service: ModelService
    protocol_version = "HTTP/1.1"  # keep-alive for JSON answers; streams end by closing
    server_version = f"gptlab/{__version__}"

    def do_GET(self) -> None:  # noqa: N802 (the http.server naming)
        self._route({"/": self._page, "/health": self._health, "/info": self._info, "/v1/models": self._models})

    def do_POST(self) -> None:  # noqa: N802
        self._route({"/v1/completions": lambda: self._answer(parse_completion_request(self._body()), chat=False),
                     "/v1/chat/completions": lambda: self._answer(parse_chat_request(self._body()), chat=True),
                     "/v1/classify": self._classify})

    def _route(self, routes: dict[str, Callable[[], None]]) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path.startswith("/v1/models/"):
                self._authorize()
                self._model(path.removeprefix("/v1/models/"))
            elif path in routes:
                if path.startswith("/v1/"):
                    self._authorize()
                routes[path]()
            else:
                raise APIError(404, f"no route {self.command} {path}; see /v1/models, /v1/completions, "
                                    "/v1/chat/completions, /health and / (chat page)", kind="not_found_error")
        except APIError as err:
            self.close_connection = True  # the request body may be unread: never parse it as the next request
            self._send_json(err.status, err.body())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # noqa: BLE001 (one bad request must not take the server down)
            log.exception("error answering %s %s", self.command, path)
            self._send_json(500, APIError(500, f"internal error: {err}", kind="server_error").body())

    def _authorize(self) -> None:
        key = self.service.api_key
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if key and not hmac.compare_digest(given.encode(), key.encode()):
            raise APIError(401, "missing or wrong API key: send `Authorization: Bearer <key>`",
                           kind="authentication_error", code="invalid_api_key")

    def _page(self) -> None:
        page = resources.files("gptlab.serving").joinpath("static/index.html").read_bytes()
        self._send(200, page, "text/html; charset=utf-8")

    def _health(self) -> None:
        self._send_json(200, {"status": "ok", "model": self.service.name})

    def _info(self) -> None:
        self._send_json(200, dataclasses.asdict(self.service.info()))

    def _classify(self) -> None:
        results = self.service.classify(parse_classify_request(self._body()))
        self._send_json(200, {"object": "list", "data": [
            {"index": i, "label": r.label, "probabilities": r.probabilities} for i, r in enumerate(results)]})

    def _models(self) -> None:
        self._send_json(200, {"object": "list", "data": [self._model_card()]})

    def _model(self, name: str) -> None:
        self._check_model(name)
        self._send_json(200, self._model_card())

    def _check_model(self, name: str | None) -> None:
        """Any model but the one served (None: unnamed) is a 404 that names the one served."""
        if name is not None and name != self.service.name:
            raise APIError(404, f"model {name!r} not found; this server serves {self.service.name!r}",
                           "model", code="model_not_found")

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.service.name, "object": "model", "created": self.service.created, "owned_by": "gptlab"}

    def _answer(self, request: Request, chat: bool) -> None:
        self._check_model(request.model)
        completion = self.service.chat(request) if chat else self.service.completion(request)
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        shape = _Shape(chat, ident, int(time.time()), self.service.name)
        with self.service.lock:  # one generation at a time; other requests wait here
            if request.stream:
                self._stream(completion, shape, request.include_usage)
                return
            text = "".join(completion)
        body = shape.whole(text, completion.finish_reason)
        body["usage"] = usage(len(completion.prompt_ids), len(completion.ids))
        self._send_json(200, body)

    def _stream(self, completion: Completion, shape: _Shape, include_usage: bool) -> None:
        """Server-sent events: one chunk per text piece, then the finish reason, usage if asked, [DONE]."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for chunk in shape.chunks(completion):
                if include_usage:
                    chunk["usage"] = None
                self._event(chunk)
            if include_usage:
                self._event({**shape.chunk(None), "choices": [],
                             "usage": usage(len(completion.prompt_ids), len(completion.ids))})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            log.info("client left; generation stopped after %d tokens", len(completion.ids))
        except Exception as err:  # noqa: BLE001 (the status line is sent: report in the stream)
            log.exception("error while streaming")
            self._event(APIError(500, f"internal error: {err}", kind="server_error").body())

    def _event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()

    def _body(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise APIError(411, "send the JSON body with a Content-Length header")
        if int(length) > MAX_BODY_BYTES:
            raise APIError(413, f"request body of {int(length):,} bytes is over the {MAX_BODY_BYTES:,}-byte limit")
        raw = self.rfile.read(int(length))
        try:
            return json.loads(raw)
        except UnicodeDecodeError:
            raise APIError(400, "the request body is not UTF-8") from None
        except json.JSONDecodeError as err:
            raise APIError(400, f"the request body is not valid JSON: {err.msg} at line {err.lineno} "
                                f"column {err.colno}") from None

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:  # tell keep-alive clients not to send another request on this socket
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.info("%s %s", self.address_string(), format % args)


@dataclass(frozen=True)
class _Shape:
    """The id, time and model name that every object of one answer repeats."""

    chat: bool
    ident: str
    created: int
    model: str

    def whole(self, text: str, finish_reason: str | None) -> dict[str, Any]:
        return completion_object(self.chat, self.ident, self.created, self.model, text, finish_reason)

    def chunk(self, text: str | None, finish_reason: str | None = None) -> dict[str, Any]:
        return completion_object(self.chat, self.ident, self.created, self.model, text, finish_reason, chunk=True)

    def chunks(self, completion: Completion) -> Iterator[dict[str, Any]]:
        """The streamed objects: (chat: a role chunk), a chunk per piece, a last one with the reason."""
        if self.chat:
            yield self.chunk("")
        for piece in completion:
            yield self.chunk(piece)
        yield self.chunk(None if self.chat else "", completion.finish_reason)


def serve(service: ModelService, host: str = "127.0.0.1", port: int = 8000,
          on_ready: Callable[[str], None] = print) -> None:
    """Serve until Ctrl-C; `on_ready` gets the base URL once the socket listens."""
    server = make_server(service, host, port)
    bound_host, bound_port = server.server_address[:2]
    on_ready(f"http://{bound_host}:{bound_port}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
