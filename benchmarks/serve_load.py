"""Load benchmark: many concurrent streaming chats against `gptlab serve`, against the same requests one at a time.

One command, CPU, no network (HTTP over loopback only, so it measures whichever server `gptlab serve` is):

    .venv/bin/python benchmarks/serve_load.py                       # GPT-2 124M (random, saved) and SmolLM2
    .venv/bin/python benchmarks/serve_load.py --models gpt2 --concurrency 32
    .venv/bin/python benchmarks/serve_load.py --help

For each model it starts `gptlab serve` (127.0.0.1, a free port, --max-batch 32 by default),
sends `--distinct` different chat requests one at a time (the reference answers and the one-at-a-time
throughput), then fires N concurrent streams (N = each --concurrency; the distinct requests repeated)
and checks that every stream ends with [DONE] and, greedy, says exactly what the same request said
alone. Reported: aggregate completion tokens/s over the wall time, time to first token (p50/p95) and
per-token latency after the first (p50/p95), and the throughput ratio against one at a time.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing
os.environ.setdefault("GPTLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))  # tokenizer files
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOPICS = ["the sea", "a red bicycle", "winter mornings", "prime numbers", "a lost key", "bread", "the moon",
          "rivers", "an old clock", "green tea", "trains at night", "a quiet library", "mountains", "bees",
          "a paper boat", "thunder", "chess", "the desert", "a violin", "autumn leaves", "lighthouses", "owls",
          "a city street", "snow", "a garden", "the wind", "an island", "candles", "the stars", "a bridge",
          "glass", "a fox"]


@dataclass(frozen=True)
class Stream:
    """One streamed answer as the client saw it."""

    text: str
    tokens: int  # completion tokens (the server's usage)
    first: float  # seconds from sending to the first content piece
    total: float  # seconds from sending to [DONE]
    done: bool  # the stream ended with a finish reason and [DONE]


@dataclass(frozen=True)
class Load:
    """Aggregates of one batch of requests."""

    streams: int
    tokens: int
    seconds: float
    ttft_p50: float
    ttft_p95: float
    per_token_p50: float
    per_token_p95: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def prompts(distinct: int) -> list[str]:
    """Chat messages of different lengths, so rows join and leave the batch at different times."""
    return [f"Write {'a short' if i % 2 else 'a'} poem about {TOPICS[i % len(TOPICS)]}" + " please" * (i % 5)
            for i in range(distinct)]


def chat(url: str, message: str, max_tokens: int, timeout: float) -> Stream:
    """POST one streaming chat request and read its server-sent events to the end."""
    where = urlparse(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=timeout)
    body = json.dumps({"messages": [{"role": "user", "content": message}], "stream": True, "temperature": 0,
                       "max_tokens": max_tokens, "stream_options": {"include_usage": True}})
    started = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:200]!r}")
    pieces, tokens, first, finished, done = [], 0, None, False, False
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            done = True
            break
        event = json.loads(line[6:])
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
        for choice in event.get("choices", []):
            piece = choice["delta"].get("content")
            if piece:
                first = first if first is not None else time.perf_counter() - started
                pieces.append(piece)
            finished = finished or choice.get("finish_reason") is not None
    conn.close()
    total = time.perf_counter() - started
    return Stream("".join(pieces), tokens, first if first is not None else total, total, done and finished)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(streams: list[Stream], seconds: float) -> Load:
    per_token = [(s.total - s.first) / (s.tokens - 1) for s in streams if s.tokens > 1]
    ttft = [s.first for s in streams]
    return Load(len(streams), sum(s.tokens for s in streams), seconds, percentile(ttft, 0.5),
                percentile(ttft, 0.95), percentile(per_token, 0.5), percentile(per_token, 0.95))


def one_at_a_time(url: str, messages: list[str], max_tokens: int, timeout: float) -> tuple[list[Stream], Load]:
    started = time.perf_counter()
    streams = [chat(url, m, max_tokens, timeout) for m in messages]
    return streams, summarize(streams, time.perf_counter() - started)


def concurrently(url: str, messages: list[str], max_tokens: int, timeout: float) -> tuple[list[Stream], Load]:
    """Every message from its own thread, released together."""
    gate = threading.Barrier(len(messages))

    def one(message: str) -> Stream | None:
        gate.wait(timeout=timeout)
        try:
            return chat(url, message, max_tokens, timeout)
        except (OSError, RuntimeError) as error:  # refused, reset, timed out, or not a 200: a lost stream
            print(f"# a stream failed: {type(error).__name__}: {error}", file=sys.stderr)
            return None

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(messages)) as pool:
        answered = list(pool.map(one, messages, timeout=timeout))
    seconds = time.perf_counter() - started
    lost = sum(stream is None for stream in answered)
    if lost:
        raise RuntimeError(f"{lost} of {len(messages)} concurrent streams were lost (see the lines above)")
    streams = [stream for stream in answered if stream is not None]
    return streams, summarize(streams, seconds)


def start_server(model: str, max_batch: int, max_queue: int, options: argparse.Namespace,
                 log: Path) -> tuple[str, subprocess.Popen]:
    """`gptlab serve` on 127.0.0.1 and a free port, as a user starts it; its base URL."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    if options.threads is not None:
        env["OMP_NUM_THREADS"] = str(options.threads)
    command = [sys.executable, "-m", "gptlab", "serve", "--model", model, "--port", "0", "--max-batch",
               str(max_batch), "--max-queue", str(max_queue), *(["--compile"] if options.compile else [])]
    with log.open("w") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
    seen = ""
    while "OpenAI API:" not in seen:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"gptlab serve exited before listening:\n{seen}{log.read_text()}")
        seen += line
    return re.search(r"OpenAI API: (http://\S+)/v1", seen).group(1), process


def saved_preset(preset: str, folder: Path) -> str:
    """A preset (gpt2: GPT-2 124M) with random weights, saved as a gptlab checkpoint, as a user would serve it."""
    import torch

    from gptlab.checkpoint.native import save_checkpoint
    from gptlab.model import GPT
    from gptlab.models import preset_config
    from gptlab.tokenizer import GPT2Tokenizer

    torch.manual_seed(0)
    return str(save_checkpoint(GPT(preset_config(preset)).eval(), GPT2Tokenizer(), folder / f"{preset}-random"))


def row(model: str, label: str, load: Load, base: Load) -> str:
    return (f"| {model} | {label} | {load.streams} | {load.tokens} | {load.seconds:.1f} | {load.tokens_per_s:.1f} | "
            f"{load.tokens_per_s / base.tokens_per_s:.2f}x | {load.ttft_p50:.2f} / {load.ttft_p95:.2f} | "
            f"{1000 * load.per_token_p50:.0f} / {1000 * load.per_token_p95:.0f} |")


def bench_model(model: str, name: str, options: argparse.Namespace, folder: Path) -> list[str]:
    """All loads against one server; raises when a stream is incomplete or differs from its answer alone."""
    url, process = start_server(model, options.max_batch, max(options.concurrency), options,
                                folder / f"{name}.log")
    try:
        messages = prompts(options.distinct)
        concurrently(url, messages, 4, options.timeout)  # warm-up: both paths, every batch width once
        alone, base = one_at_a_time(url, messages, options.max_tokens, options.timeout)
        reference = {m: s.text for m, s in zip(messages, alone, strict=True)}
        rows = [row(name, "one at a time", base, base)]
        print(rows[-1], flush=True)
        for n in options.concurrency:
            asked = [messages[i % len(messages)] for i in range(n)]
            streams, load = concurrently(url, asked, options.max_tokens, options.timeout)
            wrong = [i for i, (m, s) in enumerate(zip(asked, streams, strict=True))
                     if not s.done or s.text != reference[m]]
            if wrong:
                raise RuntimeError(f"{name}, {n} streams: {len(wrong)} incomplete or different from the answer "
                                   f"alone (first: stream {wrong[0]}: {streams[wrong[0]].text[:80]!r})")
            rows.append(row(name, f"{n} concurrent", load, base))
            print(rows[-1], flush=True)
        return rows
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=["gpt2", "smollm2", "gpt-tiny"], default=["gpt2", "smollm2"],
                        help="gpt2: GPT-2 124M, random weights saved to a temp folder; smollm2: the built-in "
                             "SmolLM2-135M-Instruct; gpt-tiny: a 0.8M preset, for the test (default: gpt2 smollm2)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 64, 128], metavar="N",
                        help="concurrent streams per load (default 32 64 128); --max-queue is the largest")
    parser.add_argument("--max-batch", type=int, default=32, metavar="N",
                        help="the server's --max-batch: streams decoded together, the rest queue (default 32)")
    parser.add_argument("--distinct", type=int, default=32, metavar="N",
                        help="different requests, also sent one at a time as the reference (default 32)")
    parser.add_argument("--max-tokens", type=int, default=32, metavar="N", help="max_tokens per request (default 32)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="the server's torch threads (OMP_NUM_THREADS; default: torch's default)")
    parser.add_argument("--compile", action="store_true", help="start the server with --compile")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S",
                        help="seconds any one request or load may take (default 600)")
    options = parser.parse_args()
    machine = platform.processor() or platform.machine()
    print(f"# serve_load, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {machine}, "
          f"{os.cpu_count()} CPUs, server threads {options.threads or 'default'}"
          f"{', compiled decode step' if options.compile else ''}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| model | load | streams | tokens | s | tok/s | vs one at a time | TTFT p50 / p95 s | ms/token p50 / p95 |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in options.models:
            try:
                bench_model(name if name == "smollm2" else saved_preset(name, folder), name, options, folder)
            except RuntimeError as error:
                print(f"error: {error}", file=sys.stderr)
                return 1
    print(f"# load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
