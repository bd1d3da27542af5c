"""Continuous batching: one thread owns the model; requests join and leave between decode steps.

Each request gets a row (slot) of one preallocated KV cache: its prompt is prefilled there as soon
as a slot is free, then it is decoded together with every row already running, one token per row
per step, each row at its own position and with its own sampling settings, seed, stops and grammar
(structured outputs: the ids its grammar does not allow next are masked before it picks). A row
that ends (a stop id, its token budget, or its reader cancelled or left) frees its slot before the
next step. Readers on other threads iterate an `EngineCompletion`, which blocks until tokens arrive.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from gptlab.fields import Range, check_ranges, setting
from gptlab.generation import (
    GenerationSettings,
    TextStream,
    TokenLogprob,
    attention_span,
    compile_decode,
    new_generator,
    pick_tokens,
    prefill_logits,
    token_logprob,
)
from gptlab.grammar import GrammarState, constrain
from gptlab.model import GPT, KVCache
from gptlab.tokenizer import Tokenizer

log = logging.getLogger(__name__)
MIN_CACHE_LEN = 64  # the cache grows in powers of two from here as longer requests arrive
PREFILL_TOKENS = 4096  # padded prompt tokens prefilled in one forward pass, at most


class QueueFull(Exception):
    """More requests wait for a slot than `EngineLimits.max_queue` allows; try again later."""


@dataclass(frozen=True)
class EngineLimits:
    """How much the engine takes on at once."""

    max_batch: int = setting("requests decoded together (KV-cache slots), each joining as another ends", 8,
                             bounds=Range(low=1))
    max_queue: int = setting("requests waiting for a free row; more are refused (the server's 429)", 64,
                             bounds=Range(low=0))

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class EngineStats:
    """A snapshot for metrics: requests waiting, rows decoding, and the batch limit."""

    queued: int
    running: int
    max_batch: int


@dataclass(frozen=True)
class _Token:
    """A generated token on its way from the engine's thread to the reader."""

    id: int
    logprob: TokenLogprob | None


@dataclass(frozen=True)
class _End:
    """The last event of a request: why it ended, or the error that stopped the engine."""

    reason: str  # "stop" | "length" | "cancelled"
    error: BaseException | None = None
    end: TokenLogprob | None = None  # the stop id that ended it, scored when logprobs were asked for


class _Request:
    """One request as the engine's thread runs it; the reader sees only its `events`."""

    def __init__(self, prompt: list[int], settings: GenerationSettings) -> None:
        self.prompt, self.settings = prompt, settings
        self.events: queue.SimpleQueue[_Token | _End] = queue.SimpleQueue()
        self.cancelled = threading.Event()
        self.slot = -1  # its cache row once admitted
        self.position = 0  # where the key/value of `last` goes at the next step
        self.last = 0  # the token fed at the next step
        self.produced = 0
        self.generator: torch.Generator | None = None
        self.grammar: GrammarState | None = None  # where its text is in `settings.grammar`, once started


class EngineCompletion(TextStream):
    """A request's completion, decoded by the engine's thread (see `TextStream` for what it reports).

    Iterating blocks until tokens arrive; closing the iterator early, dropping the completion or
    `cancel()` frees its slot at the next step.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int], settings: GenerationSettings,
                 context_length: int) -> None:
        super().__init__(tokenizer, prompt_ids, settings, context_length)
        self.request = _Request(self.prompt_ids, self.settings)

    def cancel(self) -> None:
        self.request.cancelled.set()

    def __del__(self) -> None:
        request = self.__dict__.get("request")  # absent when __init__ refused the prompt
        if request is not None:
            request.cancelled.set()

    def _tokens(self) -> Iterator[int]:
        while True:
            event = self.request.events.get()
            if isinstance(event, _End):
                if event.error is not None:
                    raise RuntimeError(f"generation failed: {event.error}") from event.error
                self.finish_reason, self.end = event.reason, event.end
                return
            self._record(event.id, event.logprob)
            yield event.id


def prefill_groups(requests: list[_Request]) -> list[list[_Request]]:
    """Requests in groups to prefill together: similar lengths (less padding), at most
    PREFILL_TOKENS padded tokens a group (bounded memory), the shortest first."""
    groups: list[list[_Request]] = []
    for request in sorted(requests, key=lambda r: len(r.prompt)):
        if groups and (len(groups[-1]) + 1) * len(request.prompt) <= PREFILL_TOKENS:
            groups[-1].append(request)
        else:
            groups.append([request])
    return groups


class Engine:
    """Continuous batching over one model: `submit` from any thread, read the completion anywhere."""

    def __init__(self, model: GPT, limits: EngineLimits = EngineLimits(), compile: bool = False) -> None:
        self.model, self.limits = model.eval(), limits
        self.compiled = compile and compile_decode(model, rows=limits.max_batch).error is None
        parameter = next(model.parameters())
        self._device, self._dtype = parameter.device, parameter.dtype
        self._cache = KVCache.allocate(model.config, limits.max_batch, MIN_CACHE_LEN, self._device, self._dtype)
        self._free = list(range(limits.max_batch))  # a heap: the lowest free slot first keeps batches narrow
        self._rows: list[_Request] = []  # running, owned by the engine's thread
        self._waiting: deque[_Request] = deque()
        self._running = 0  # len(self._rows), published under the lock
        self._lock = threading.Condition()
        self._closing = False
        self._drain = True
        self._thread = threading.Thread(target=self._loop, name="gptlab-engine", daemon=True)
        self._thread.start()

    def submit(self, tokenizer: Tokenizer, prompt_ids: Sequence[int],
               settings: GenerationSettings) -> EngineCompletion:
        """Queue a prompt; its completion streams as the engine decodes it. Raises QueueFull when
        `max_queue` requests already wait for a slot."""
        completion = EngineCompletion(tokenizer, prompt_ids, settings, self.model.config.context_length)
        with self._lock:
            if self._closing:
                raise RuntimeError("the engine is closed")
            if len(self._waiting) + self._running >= self.limits.max_batch + self.limits.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting (max_queue={self.limits.max_queue})")
            self._waiting.append(completion.request)
            self._lock.notify()
        return completion

    def stats(self) -> EngineStats:
        with self._lock:
            return EngineStats(queued=len(self._waiting), running=self._running, max_batch=self.limits.max_batch)

    def close(self, drain: bool = True) -> None:
        """Stop the engine: finish every submitted request first (`drain`), or cancel them."""
        with self._lock:
            self._closing, self._drain = True, drain
            self._lock.notify()
        self._thread.join()

    def _loop(self) -> None:
        try:
            with torch.inference_mode():
                while self._admit():
                    self._step()
        except BaseException as error:  # readers must not wait forever on a dead engine
            log.exception("the generation engine stopped")
            with self._lock:
                self._closing = True
                ended = [*self._rows, *self._waiting]
                self._waiting.clear()
            for request in ended:
                request.events.put(_End("cancelled", error))

    def _admit(self) -> bool:
        """Start waiting requests in free slots (prefill); False once closed with nothing left to do."""
        with self._lock:
            while not self._waiting and not self._rows and not self._closing:
                self._lock.wait()
            if self._closing and not self._drain:
                for request in [*self._waiting, *self._rows]:
                    request.cancelled.set()
            if self._closing and not self._waiting and not self._rows:
                return False
            starting = []
            while self._waiting and self._free:
                request = self._waiting.popleft()
                request.slot = heapq.heappop(self._free)
                starting.append(request)
            self._running += len(starting)
        self._rows.extend(starting)
        for request in [r for r in starting if r.cancelled.is_set() or r.settings.max_new_tokens == 0]:
            self._finish(request, "cancelled" if request.cancelled.is_set() else "length")
        for group in prefill_groups([r for r in starting if r in self._rows]):
            self._start(group)
        return True

    def _start(self, requests: list[_Request]) -> None:
        """Prefill prompts into their slots, together, and deliver each one's first token."""
        self._make_room(max(len(r.prompt) + r.settings.max_new_tokens for r in requests))
        for request in requests:
            request.generator = new_generator(request.settings.seed, self._device)
            request.position = len(request.prompt)
            request.grammar = request.settings.grammar.start() if request.settings.grammar else None
        logits = prefill_logits(self.model, [r.prompt for r in requests], self._cache,
                                [r.slot for r in requests])  # (n, V)
        picked = self._pick(logits, requests)
        for row, (request, token) in enumerate(zip(requests, picked, strict=True)):
            self._deliver(request, token, logits[row])

    def _step(self) -> None:
        """Decode one token for every running row, each at its own position."""
        for request in [r for r in self._rows if r.cancelled.is_set()]:
            self._finish(request, "cancelled")
        if not self._rows:
            return
        width = self._batch_width()
        tokens, positions = [0] * width, [0] * width  # free slots decode a dummy token at place 0
        for request in self._rows:
            tokens[request.slot], positions[request.slot] = request.last, request.position
        logits = self.model.decode_step(torch.tensor(tokens, device=self._device),
                                        torch.tensor(positions, device=self._device),
                                        self._cache, attention_span(max(positions), self._cache.max_len))
        rows = list(self._rows)
        slots = torch.tensor([r.slot for r in rows], device=self._device)
        picked = self._pick(logits[slots], rows)
        for request, token in zip(rows, picked, strict=True):
            request.position += 1
            self._deliver(request, token, logits[request.slot])

    def _pick(self, logits: torch.Tensor, requests: list[_Request]) -> list[int]:
        """Each request's next token from its row of `logits` (n, V), within what its grammar allows."""
        allowed = constrain(logits, [r.grammar for r in requests], [r.settings.stop_ids for r in requests])
        return pick_tokens(allowed, [r.settings for r in requests], [r.generator for r in requests])

    def _batch_width(self) -> int:
        """Rows the step computes: the used slots rounded up to a power of two (fewer dummy rows when
        few requests run, few distinct shapes)."""
        highest = max(r.slot for r in self._rows) + 1
        return min(self.limits.max_batch, 1 << (highest - 1).bit_length())

    def _deliver(self, request: _Request, token: int, logits: torch.Tensor) -> None:
        """Hand a picked token to the reader, or end the request at a stop id or its token budget."""
        settings = request.settings
        if token in settings.stop_ids:
            self._finish(request, "stop", token_logprob(logits, token, settings))
            return
        request.events.put(_Token(token, token_logprob(logits, token, settings)))
        request.produced += 1
        request.last = token
        if request.grammar is not None:
            request.grammar.advance(token)
            if request.grammar.complete:  # the text is whole: nothing but a stop id could follow
                self._finish(request, "stop")
                return
        if request.produced >= settings.max_new_tokens:
            self._finish(request, "length")

    def _finish(self, request: _Request, reason: str, end: TokenLogprob | None = None) -> None:
        request.events.put(_End(reason, end=end))
        self._rows.remove(request)
        with self._lock:
            heapq.heappush(self._free, request.slot)
            self._running -= 1

    def _make_room(self, length: int) -> None:
        """Grow every cache row to hold `length` tokens (a power of two, at most the context)."""
        if length <= self._cache.max_len:
            return
        grown = min(self.model.config.context_length, 1 << (length - 1).bit_length())
        self._cache = self._cache.resized(grown)
