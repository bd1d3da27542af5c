"""`GET /metrics`: what an operator watches, in Prometheus's text format (prometheus-client).

Each app has its own registry, so several servers in one process (tests) count apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds: from a few milliseconds (a tiny model) to the minute a long queue can take.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True)
class Load:
    """How busy generation is right now: requests waiting for a slot, rows decoding together."""

    queued: int
    running: int


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter  # by route and status
    prompt_tokens: Counter
    completion_tokens: Counter
    time_to_first_token: Histogram
    time_per_token: Histogram  # between a completion's tokens, after the first

    @classmethod
    def create(cls, load: Callable[[], Load]) -> Metrics:
        """Fresh counters; `load` is asked for queue depth and batch size at each scrape."""
        registry = CollectorRegistry()
        queued = Gauge("gptlab_queue_depth", "requests waiting for a generation slot", registry=registry)
        running = Gauge("gptlab_running_batch_size", "completions decoding together", registry=registry)
        queued.set_function(lambda: load().queued)
        running.set_function(lambda: load().running)
        return cls(
            registry,
            Counter("gptlab_requests", "HTTP requests answered", ["route", "status"], registry=registry),
            Counter("gptlab_prompt_tokens", "prompt tokens of answered requests", registry=registry),
            Counter("gptlab_completion_tokens", "tokens generated", registry=registry),
            Histogram("gptlab_time_to_first_token_seconds", "from request to first generated text",
                      buckets=LATENCY_BUCKETS, registry=registry),
            Histogram("gptlab_time_per_output_token_seconds", "between generated tokens",
                      buckets=LATENCY_BUCKETS, registry=registry),
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
