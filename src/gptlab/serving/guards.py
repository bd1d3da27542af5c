"""What every request passes before a route sees it: its framing and encoding, Host and Origin checks,
the API key, a bounded body read, a wall-clock limit; what every answer carries: the security headers;
and one log line per request.

One plain ASGI middleware, so the order of the checks is the order of the lines below. A browser
page on another site can reach a local server (DNS rebinding, simple cross-site POSTs); the Host and
Origin checks are what stop it, since the server cannot tell such a request from a user's by its body.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from gptlab.fields import Range, check_ranges, setting
from gptlab.serving.api import APIError
from gptlab.serving.headers import API_POLICY, SECURITY_HEADERS
from gptlab.serving.metrics import Metrics

log = logging.getLogger("gptlab.serving")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# Answered without the API key: load balancers probe /health; the chat page at / holds no secret, and a
# browser cannot send a key with a page load: the page asks for the key and sends it with its API calls.
PUBLIC_PATHS = ("/health", "/")
STREAM_ERROR = "gptlab.stream_error"  # in a request's scope state: the error event that ended its stream

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Protection:
    """The HTTP-side limits of `gptlab serve` (its flags)."""

    allowed_hosts: tuple[str, ...] = setting(
        "also answer requests whose Host header names this, e.g. the name a proxy or the network uses (repeatable; "
        "* allows any). Default: loopback names only, against DNS rebinding", (), flag="allowed-host")
    cors_origins: tuple[str, ...] = setting(
        "let web pages at this origin (e.g. https://app.example.com) call the API (repeatable; default none: pages of "
        "other sites are refused)", (), flag="cors-origin")
    api_key: str | None = setting(
        "require `Authorization: Bearer <key>` on every route but /health and / (the chat page, which asks for the "
        "key; default: $GPTLAB_API_KEY, else none)", None)
    max_body_bytes: int = setting("largest request body", 1 << 20, bounds=Range(0, above=True))
    body_timeout: float = setting("seconds for a request's body to arrive", 10.0, bounds=Range(0, above=True))
    request_timeout: float = setting("wall-clock limit in seconds of one request, streaming included", 600.0,
                                     bounds=Range(0, above=True))
    log_prompts: bool = setting("log each prompt's text with its request id (off: prompts may be private)", False)

    def __post_init__(self) -> None:
        check_ranges(self)

    def host_allowed(self, host: str) -> bool:
        """Whether a Host header ("name", "name:port", "[::1]:port") names this server."""
        if host.startswith("["):
            name = host[1:].split("]")[0]
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        allowed = (*LOOPBACK_HOSTS, *(allowed.lower() for allowed in self.allowed_hosts))
        return name.lower() in allowed or "*" in self.allowed_hosts

    def origin_allowed(self, origin: str, host: str) -> bool:
        """A page of this server itself (behind a proxy its scheme may differ), or one of --cors-origin."""
        return origin.partition("://")[2] == host or origin in self.cors_origins or "*" in self.cors_origins


def printable(text: str, limit: int = 300) -> str:
    """`text` safe for one log line: control characters escaped (no forged lines), long text cut."""
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return escaped + ("..." if len(text) > limit else "")


class Guard:
    """The ASGI middleware around the FastAPI app."""

    def __init__(self, app: ASGIApp, protection: Protection, metrics: Metrics, routes: frozenset[str]) -> None:
        self.app, self.protection, self.metrics, self.routes = app, protection, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ident = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = ident
        reply = _Reply(send, ident)
        started = time.monotonic()
        try:
            self._check(scope)
            body = await self._body(scope, receive)
            async with asyncio.timeout(self.protection.request_timeout):
                await self.app(scope, _replay(body, receive), reply.send)
        except APIError as err:
            await reply.error(err)
        except TimeoutError:
            await reply.error(APIError(503, f"the request took over {self.protection.request_timeout:g} s and "
                                            "was stopped; ask for fewer tokens or try later", kind="timeout_error"))
        except ClientGone:
            reply.status = 499  # nginx's code for "the client closed the connection"
        finally:
            self._record(scope, ident, reply.status, time.monotonic() - started)

    def _check(self, scope: Scope) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        _check_framing(headers)
        host = headers.get("host", "")
        if not self.protection.host_allowed(host):
            raise APIError(403, f"Host {printable(host, 80)!r} is not served here; start the server with "
                                "--allowed-host NAME to serve it", kind="permission_error")
        origin = headers.get("origin")
        if origin is not None and not self.protection.origin_allowed(origin, host):
            raise APIError(403, f"requests from pages at {printable(origin, 80)!r} are refused; start the server "
                                "with --cors-origin ORIGIN to allow them", kind="permission_error")
        key = self.protection.api_key
        if key and scope["path"] not in PUBLIC_PATHS and scope["method"] != "OPTIONS":
            given = headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), key.encode()):
                raise APIError(401, "missing or wrong API key: send `Authorization: Bearer <key>`",
                               kind="authentication_error", code="invalid_api_key")

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body, read within the body timeout and the size limit (a slow or endless
        sender loses its request, not a worker)."""
        limit = self.protection.max_body_bytes
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and int(length) > limit:  # the HTTP parser has checked it is digits
            raise APIError(413, f"request body of {int(length):,} bytes is over the {limit:,}-byte limit")
        body = bytearray()
        try:
            async with asyncio.timeout(self.protection.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone
                    body += message.get("body", b"")
                    if len(body) > limit:
                        raise APIError(413, f"request body is over the {limit:,}-byte limit")
                    if not message.get("more_body", False):
                        return bytes(body)
        except TimeoutError:
            raise APIError(408, f"the request body did not arrive within {self.protection.body_timeout:g} s",
                           kind="timeout_error") from None

    def _record(self, scope: Scope, ident: str, status: int | None, seconds: float) -> None:
        """The metric and log line count a stream that ended in an error event by that error's status
        (its 200 went out first; `cut=` says so)."""
        cut: APIError | None = scope["state"].get(STREAM_ERROR)
        if cut is not None:
            status = cut.status
        route = scope["path"] if scope["path"] in self.routes else "other"
        self.metrics.requests.labels(route, str(status)).inc()
        client = scope.get("client") or ("-", 0)
        log.info("request id=%s client=%s method=%s path=%s status=%s seconds=%.3f%s", ident, client[0],
                 printable(scope["method"], 20), printable(scope["path"], 200), status, seconds,
                 f" cut={cut.code or cut.kind}" if cut is not None else "")


def _check_framing(headers: dict[str, str]) -> None:
    """A body framed two ways is how requests are smuggled past a proxy (RFC 9112 6.3: an error, and
    the connection closed, as every refusal here closes it); a compressed body is refused rather than
    inflated, since a few kilobytes of gzip can inflate past any body limit."""
    if "transfer-encoding" in headers and "content-length" in headers:
        raise APIError(400, "the request has both Content-Length and Transfer-Encoding; send one of them")
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise APIError(415, f"Content-Encoding {printable(encoding, 40)!r} is not accepted; send the body "
                            "uncompressed", code="unsupported_content_encoding")


def stream_failed(scope: Scope, err: APIError) -> None:
    """Record that a stream ended with `err` as its last event, for the request's log line and metric."""
    scope["state"][STREAM_ERROR] = err


class ClientGone(Exception):
    """The client closed the connection before its request was whole."""


class _Reply:
    """`send`, remembering the status and adding the request id and the security headers (the API's
    Content-Security-Policy unless a page brings its own); errors in OpenAI's shape."""

    def __init__(self, send: Send, ident: str) -> None:
        self._send, self.ident, self.status = send, ident, None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = list(message.get("headers", []))
            if all(name.lower() != b"content-security-policy" for name, _ in headers):
                headers.append((b"content-security-policy", API_POLICY.encode()))
            message["headers"] = [*headers, *SECURITY_HEADERS, (b"x-request-id", self.ident.encode())]
        await self._send(message)

    async def error(self, err: APIError) -> None:
        """The error as JSON, closing the connection (the body may be unread); nothing once a reply began."""
        if self.status is not None:
            return
        body = json.dumps(err.body()).encode()
        await self.send({"type": "http.response.start", "status": err.status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await self.send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body read already, then waits for the client to leave."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
