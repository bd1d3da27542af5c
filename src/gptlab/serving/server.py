"""Run the app on uvicorn with the socket limits a server facing unknown clients needs.

uvicorn times out idle keep-alive sockets but, once a request's first byte arrives, waits forever for
the rest of its line and headers; `_Protocol` keeps that clock running from connect until the head is
whole, so a client that trickles, or never ends, its head loses the socket. uvicorn answers malformed
HTTP with a plain-text 400; `_Protocol` answers in OpenAI's JSON error shape.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from gptlab.engine import Engine
from gptlab.fields import Range, check_ranges, setting
from gptlab.serving.api import APIError
from gptlab.serving.app import make_app
from gptlab.serving.guards import Protection
from gptlab.serving.headers import API_POLICY, SECURITY_HEADERS
from gptlab.serving.service import ModelService

log = logging.getLogger("gptlab.serving")
CUT_GRACE = 10  # seconds answers cut at the drain timeout get to send their error event before uvicorn cancels


@dataclass(frozen=True)
class Listening:
    """Where and how the server listens (the `gptlab serve` flags)."""

    host: str = setting("address to listen on (loopback: other machines reach it only through a proxy; 0.0.0.0 "
                        "exposes it to the network: add --allowed-host and --api-key, or put it behind a proxy)",
                        "127.0.0.1")
    port: int = setting("port (0 picks a free one)", 8000)
    head_timeout: int = setting("seconds for a request's line and headers to arrive, and for an idle keep-alive "
                                "socket to stay open", 10, bounds=Range(0, above=True))
    drain_timeout: int = setting("seconds SIGTERM / Ctrl-C waits for answers in flight before it cuts them with an "
                                 "error event (keep it under your service manager's stop timeout)", 60,
                                 bounds=Range(0))
    backlog: int = setting("connections the OS queues before the server accepts them (bursts)", 2048, flag=False)

    def __post_init__(self) -> None:
        check_ranges(self)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be from 0 to 65535 (0 picks a free one), got {self.port}")


def bind(listening: Listening) -> socket.socket:
    """A socket bound to --host and --port and listening, so clients that come before the server's loop
    starts wait rather than be refused. An address that cannot be taken is one line: the address, why, and
    for a port in use the process that holds it, where the operating system tells (uvicorn would log the
    bare reason and exit with its own code)."""
    address = f"[{listening.host}]:{listening.port}" if ":" in listening.host else f"{listening.host}:{listening.port}"
    sock = socket.socket(socket.AF_INET6 if ":" in listening.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listening.host, listening.port))
    except OSError as err:
        sock.close()
        held = _holder(listening.port) if err.errno == errno.EADDRINUSE else ""
        raise OSError(f"cannot listen on {address}: {err.strerror or err}{held}; stop it or pick another --port "
                      "(0 picks a free one)") from err
    sock.listen(listening.backlog)
    return sock


def _holder(port: int) -> str:
    """", held by pid N (name)" for the process listening on `port`, where the OS tells (another user's may not)."""
    import psutil

    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return f", held by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except psutil.Error:
        pass
    return ""


def serve(service: ModelService, protection: Protection, listening: Listening, sock: socket.socket,
          on_ready: Callable[[str], None] = print) -> None:
    """Serve on `sock` (`bind`) until SIGTERM or Ctrl-C, then finish the answers in flight and return;
    `on_ready` gets the base URL."""
    config = uvicorn.Config(make_app(service, protection), host=listening.host, port=listening.port,
                            http=_Protocol, ws="none", lifespan="off", log_config=None, access_log=False,
                            timeout_keep_alive=listening.head_timeout, backlog=listening.backlog,
                            timeout_graceful_shutdown=listening.drain_timeout + CUT_GRACE, server_header=False)
    server = _Server(config, service.engine, listening.drain_timeout)
    host, port = sock.getsockname()[:2]
    on_ready(f"http://{f'[{host}]' if ':' in host else host}:{port}")
    server.run(sockets=[sock])


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, engine: Engine, drain_timeout: int) -> None:
        super().__init__(config)
        self.engine, self.drain_timeout, self.cutting = engine, drain_timeout, False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGTERM or Ctrl-C: stop accepting, drain, return (uvicorn would re-raise the signal after
        draining, turning a clean stop into a crash); a second one cuts the answers in flight; a third
        stops at once."""
        if self.cutting:
            self.force_exit = True
        elif self.should_exit:
            self.cut()
        self.should_exit = True

    def cut(self) -> None:
        """Cancel every completion in flight: each client gets a 503 (a stream, as its last event) and
        its connection closes, which ends the drain. Left to uvicorn, the drain's end would cancel the
        tasks: streams stopped mid-chunk, a traceback each, and logged as 200s."""
        if not self.cutting:
            self.cutting = True
            stats = self.engine.stats()
            log.warning("stopping the answers in flight (%d running, %d queued)", stats.running, stats.queued)
            # on a thread: closing joins the engine's, and a signal handler must not block the event loop
            threading.Thread(target=self.engine.close, kwargs={"drain": False}, name="gptlab-cut", daemon=True).start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's drain, with the answers still in flight at the drain timeout cut as by a second signal."""
        timer = asyncio.get_running_loop().call_later(self.drain_timeout, self.cut)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()


class _Protocol(H11Protocol):
    def connection_made(self, transport) -> None:  # noqa: ANN001 (asyncio's signature)
        super().connection_made(transport)
        # the keep-alive timer closes the socket unless a request's head is complete in time
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        # uvicorn stops the timer at any byte; only a whole head (the request event in handle_events) stops it here
        self.conn.receive_data(data)
        self.handle_events()

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(APIError(400, f"malformed HTTP request ({msg.rstrip('.')}); send HTTP/1.1 with "
                                        "ASCII headers and a decimal Content-Length").body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close"), (b"content-security-policy", API_POLICY.encode()), *SECURITY_HEADERS]
        for event in (h11.Response(status_code=400, headers=headers), h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()
