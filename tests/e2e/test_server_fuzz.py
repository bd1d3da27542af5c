"""Schemathesis against `gptlab serve`'s /openapi.json: generated requests, valid and not, to every route.

150 valid and 150 invalid ones: none may get a 5xx or hang, and every error body
must be in OpenAI's error shape, which the official clients parse.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from e2e.servers import Server, start_server


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> Iterator[Server]:
    """A tiny random model, with a small default max_tokens so generated requests stay quick."""
    running = start_server("gpt-tiny", tmp_path_factory.mktemp("fuzz") / "server.log", "--max-tokens", "8")
    yield running
    assert running.stop() == 0
    assert "Traceback" not in running.log.read_text()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_get_no_5xx_and_openai_shaped_errors(fuzzed, mode):
    schema = schemathesis.openapi.from_url(fuzzed.url + "/openapi.json")

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case) -> None:
        response = case.call(timeout=60)
        assert response.status_code < 500, (case.method, case.path, case.body, response.text)
        if response.status_code >= 400 and case.method != "HEAD":
            error = response.json()["error"]
            assert isinstance(error["message"], str) and {"type", "param", "code"} <= set(error), response.text

    check()
