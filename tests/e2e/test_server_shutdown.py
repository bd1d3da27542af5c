"""`gptlab serve` stopped by a service manager: SIGTERM while streams are in flight, then a second one.

The issue's probe found the drain sound (every stream finished with [DONE], exit 0); a second SIGTERM
cut streams mid-chunk with a traceback each, logged as 200s."""

from __future__ import annotations

import http.client
import json
import re
import signal

from e2e.servers import Server, start_server

TIMEOUT = 30  # seconds any socket read may wait: a hang fails the test instead of stalling the suite


def connect(server: Server) -> http.client.HTTPConnection:
    host, port = server.url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)


def stream(server: Server, max_tokens: int) -> http.client.HTTPResponse:
    """A streamed completion, once its status line has come."""
    connection = connect(server)
    connection.request("POST", "/v1/completions", json.dumps({"prompt": "Hello", "max_tokens": max_tokens,
                                                              "stream": True}), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    return response


def events(response: http.client.HTTPResponse) -> list[str]:
    """The data of each server-sent event until the server closes the stream."""
    return [line.decode().removeprefix("data: ").strip() for line in response if line.startswith(b"data: ")]


def test_sigterm_drains_streams_and_a_second_one_ends_the_rest_with_an_error_event(tmp_path):
    """GPT-2 124M (random weights: no end-of-text), four streams of 16 tokens and four of 900. The
    first SIGTERM lets the short ones finish with [DONE]; the second ends the long ones with a 503
    error event, logged as such, and the server exits 0 without a traceback."""
    server = start_server("gpt2", tmp_path / "server.log")
    try:
        short = [stream(server, 16) for _ in range(4)]
        long = [stream(server, 900) for _ in range(4)]
        for response in short + long:  # every stream is under way
            assert response.readline().startswith(b"data: {")
        server.process.send_signal(signal.SIGTERM)
        for response in short:
            ended = events(response)
            assert ended[-1] == "[DONE]" and json.loads(ended[-2])["choices"][0]["finish_reason"] == "length"
        server.process.send_signal(signal.SIGTERM)
        for response in long:
            ended = events(response)
            assert "[DONE]" not in ended and json.loads(ended[-1])["error"]["code"] == "server_shutdown"
            assert all("error" not in json.loads(event) for event in ended[:-1])  # whole chunks before it
        assert server.process.wait(timeout=TIMEOUT) == 0
    finally:
        if server.process.poll() is None:
            server.process.kill()
    log = server.log.read_text()
    assert "Traceback" not in log and "stopping the answers in flight" in log
    assert len(re.findall(r"path=/v1/completions status=200 ", log)) == 4
    assert len(re.findall(r"path=/v1/completions status=503 seconds=\S+ cut=server_shutdown", log)) == 4


def test_the_drain_timeout_cuts_what_is_still_streaming_with_an_error_event(tmp_path):
    """One SIGTERM and `--drain-timeout 1`: a stream of 900 tokens cannot finish in a second, so the timeout
    ends it as a second signal would (a 503 error event, logged), and the server exits 0 on its own."""
    server = start_server("gpt2", tmp_path / "server.log", "--drain-timeout", "1")
    try:
        response = stream(server, 900)
        assert response.readline().startswith(b"data: {")
        server.process.send_signal(signal.SIGTERM)
        ended = events(response)
        assert "[DONE]" not in ended and json.loads(ended[-1])["error"]["code"] == "server_shutdown"
        assert len(ended) < 900
        assert server.process.wait(timeout=TIMEOUT) == 0
    finally:
        if server.process.poll() is None:
            server.process.kill()
    log = server.log.read_text()
    assert "Traceback" not in log
    assert len(re.findall(r"path=/v1/completions status=503 seconds=\S+ cut=server_shutdown", log)) == 1
