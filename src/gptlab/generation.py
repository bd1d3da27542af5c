"""Text generation: prefill a KV cache with the prompt, then decode one token per step.

Generation is an iterator of token ids; the CLI, the REPL, a server stream and batch
evaluation all consume the same iterator.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from gptlab.model import GPT, KVCache
from gptlab.tokenizer import Tokenizer

log = logging.getLogger(__name__)
MAX_TOP_LOGPROBS = 20  # OpenAI's limit on alternatives per token


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability and the most likely alternatives at its place.

    Taken from the model's distribution before temperature, top-k and top-p, as OpenAI reports them.
    """

    id: int
    logprob: float
    top: tuple[tuple[int, float], ...]  # (id, logprob), most likely first


def token_logprob(logits: Tensor, token: int, top: int) -> TokenLogprob:
    """`token`'s log-probability under `logits` (V,) and the `top` most likely (id, logprob) pairs."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # (V,)
    best = torch.topk(logprobs, top) if top else None
    pairs = tuple(zip(best.indices.tolist(), best.values.tolist())) if best is not None else ()
    return TokenLogprob(token, float(logprobs[token]), pairs)


@dataclass(frozen=True)
class GenerationSettings:
    """How to pick each next token and when to stop."""

    max_new_tokens: int = 64  # upper bound on generated tokens per prompt
    temperature: float = 1.0  # 0 = greedy (argmax), as in the OpenAI API
    top_k: int | None = None  # sample only among the k most likely tokens
    top_p: float | None = None  # nucleus sampling: smallest set with probability mass >= p
    seed: int | None = None  # makes sampling reproducible
    stop_ids: tuple[int, ...] = ()  # generation of a sequence ends at any of these (not emitted)
    end_of_text: bool = True  # with a tokenizer (Completion, responses), its end-of-text id stops too
    stop_strings: tuple[str, ...] = field(default=())  # text-level stops, see `stream_text`
    kv_cache: bool = True  # False recomputes the whole sequence each step (for teaching/tests)
    logprobs: int | None = None  # report each token's log-probability and this many alternatives (0-20)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {self.logprobs}")

    def stopping_for(self, tokenizer: Tokenizer) -> GenerationSettings:
        """These settings as text generation with `tokenizer` runs them: its end-of-text id (when it
        has one and `end_of_text` is on) joins the stop ids. The one place that decides it."""
        eos = tokenizer.eos_id
        if not self.end_of_text or eos is None or eos in self.stop_ids:
            return self
        return dataclasses.replace(self, stop_ids=(*self.stop_ids, eos))


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick next token ids (B,) from logits (B, V): greedy at temperature 0, else sampled.

    Any legal temperature and top_p, down to the smallest positive float, gives a valid token:
    logits are shifted so the best is 0 before dividing (nothing overflows; as the temperature
    falls the choice becomes greedy), in float64, and top_p always keeps the most likely token.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.double()
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature  # (B, V), <= 0
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(dim=-1)
        drop_sorted = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p  # mass before >= p
        drop_sorted[:, 0] = False  # the most likely token stays, however small p is
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def fit_new_tokens(max_new_tokens: int, context_length: int) -> int:
    """`max_new_tokens`, cut to half the context when it would fill it (logged as a warning)."""
    if max_new_tokens >= context_length:
        log.warning("max_new_tokens=%d does not fit the context length %d; using %d",
                    max_new_tokens, context_length, context_length // 2)
        return context_length // 2
    return max_new_tokens


def fit_to_context(prompt: Sequence[int], max_new_tokens: int, context_length: int) -> tuple[list[int], int]:
    """The prompt, left-truncated, and the number of new tokens, both cut so they fit the model's
    context together (each cut is logged as a warning)."""
    max_new_tokens = fit_new_tokens(max_new_tokens, context_length)
    room = context_length - max_new_tokens
    if len(prompt) > room:
        log.warning("prompt of %d tokens left-truncated to its last %d to leave room for %d new tokens "
                    "in the context of %d", len(prompt), room, max_new_tokens, context_length)
        return list(prompt[-room:]), max_new_tokens
    return list(prompt), max_new_tokens


def _left_pad(prompts: Sequence[Sequence[int]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Token ids (B, T) left-padded with 0, and the (B, T) mask of real tokens."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    valid = torch.zeros(len(prompts), width, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            valid[row, width - len(prompt) :] = True
    return ids.to(device), valid.to(device)


def decode_steps(
    model: GPT, prompts: Sequence[Sequence[int]], settings: GenerationSettings
) -> Iterator[Tensor]:
    """Yield the next token ids (B,) of every prompt, step by step.

    Stops after `max_new_tokens` steps or once every row has produced a stop id; rows that
    stopped keep yielding stop ids, which callers drop.
    """
    for next_ids, _ in _decode(model, prompts, settings):
        yield next_ids


@torch.inference_mode()
def _decode(
    model: GPT, prompts: Sequence[Sequence[int]], settings: GenerationSettings
) -> Iterator[tuple[Tensor, Tensor]]:
    """`decode_steps`, with the float32 logits (B, V) each step's ids were picked from."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    device = next(model.parameters()).device
    max_new_tokens = fit_new_tokens(settings.max_new_tokens, model.config.context_length)
    prompts = [fit_to_context(p, max_new_tokens, model.config.context_length)[0] for p in prompts]
    ids, valid = _left_pad(prompts, device)
    generator = torch.Generator(device=device)
    if settings.seed is not None:
        generator.manual_seed(settings.seed)
    else:
        generator.seed()
    stop = torch.tensor(settings.stop_ids or [-1], device=device)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    dtype = next(model.parameters()).dtype
    cache = KVCache.allocate(model.config, len(prompts), ids.shape[1] + max_new_tokens, device, dtype)
    model_input, input_valid = ids, valid
    for _ in range(max_new_tokens):
        if not settings.kv_cache:  # recompute everything: a fresh cache over the whole sequence
            cache = KVCache.allocate(model.config, len(prompts), ids.shape[1], device, dtype)
            model_input, input_valid = ids, valid
        hidden = model.hidden(model_input, cache, input_valid)  # (B, T, C)
        logits = model.lm_head(hidden[:, -1]).float()  # (B, V), float32 whatever the weights' dtype
        next_ids = sample_next(logits, settings.temperature, settings.top_k, settings.top_p, generator)
        next_ids = torch.where(finished, stop[0], next_ids)
        finished |= torch.isin(next_ids, stop)
        yield next_ids, logits
        if bool(finished.all()):
            return
        model_input, input_valid = next_ids[:, None], None  # new tokens are real; the cache has the rest
        if not settings.kv_cache:  # only the recomputing path needs the whole sequence
            ids = torch.cat([ids, model_input], dim=1)
            valid = torch.cat([valid, torch.ones_like(model_input, dtype=torch.bool)], dim=1)


def generate(model: GPT, prompt: Sequence[int], settings: GenerationSettings) -> Iterator[int]:
    """Yield generated token ids for one prompt, ending before the first stop id."""
    for step in decode_steps(model, [prompt], settings):
        token = int(step[0])
        if token in settings.stop_ids:
            return
        yield token


def generate_batch(
    model: GPT, prompts: Sequence[Sequence[int]], settings: GenerationSettings
) -> list[list[int]]:
    """Generated ids for a batch of prompts (left-padded), each cut before its first stop id."""
    outputs: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    for step in decode_steps(model, prompts, settings):
        for row, token in enumerate(step.tolist()):
            done[row] = done[row] or token in settings.stop_ids
            if not done[row]:
                outputs[row].append(token)
    return outputs


class TextCompletion(Protocol):
    """What serving code reads from a completion, whichever loop produces it (`Completion` here, or
    `engine.EngineCompletion`): text pieces while iterating, then `ids`, `finish_reason` and `logprobs`."""

    ids: list[int]
    finish_reason: str | None  # "stop" | "length" | "cancelled", once iteration ends
    logprobs: list[TokenLogprob]

    def __iter__(self) -> Iterator[str]: ...

    def cancel(self) -> None:
        """Stop generating at the next token (finish_reason "cancelled"); the client has gone."""


class Completion:
    """One prompt's completion as text pieces; afterwards, its token ids and why it ended.

    The CLI prints the pieces and the server streams them; both read `ids` (usage counts) and
    `finish_reason` ("stop": a stop id or string; "length": `max_new_tokens` ran out) once the
    pieces are consumed. The prompt is fitted to the context first (`fit_to_context`), and the
    tokenizer's end-of-text ends it (`GenerationSettings.stopping_for`).
    """

    def __init__(self, model: GPT, tokenizer: Tokenizer, prompt_ids: Sequence[int],
                 settings: GenerationSettings) -> None:
        if not prompt_ids:
            raise ValueError("the prompt is empty after tokenization; give at least one character")
        self.model, self.tokenizer = model, tokenizer
        self.prompt_ids, max_new_tokens = fit_to_context(prompt_ids, settings.max_new_tokens,
                                                         model.config.context_length)
        self.settings = dataclasses.replace(settings.stopping_for(tokenizer), max_new_tokens=max_new_tokens)
        self.ids: list[int] = []
        self.logprobs: list[TokenLogprob] = []  # filled when `settings.logprobs` is set
        self.finish_reason: str | None = None
        self._cancelled = False

    def __iter__(self) -> Iterator[str]:
        yield from stream_text(self._tokens(), self.tokenizer, self.settings.stop_strings)
        if self.finish_reason is None:  # stream_text ended the text at a stop string
            self.finish_reason = "stop"

    def cancel(self) -> None:
        """Stop generating at the next token (finish_reason "cancelled")."""
        self._cancelled = True

    def _tokens(self) -> Iterator[int]:
        top = self.settings.logprobs
        for step, logits in _decode(self.model, [self.prompt_ids], self.settings):
            if self._cancelled:
                self.finish_reason = "cancelled"
                return
            token = int(step[0])
            if token in self.settings.stop_ids:
                break
            self.ids.append(token)
            if top is not None:
                self.logprobs.append(token_logprob(logits[0], token, top))
            yield token
        self.finish_reason = "length" if len(self.ids) >= self.settings.max_new_tokens else "stop"


def stream_text(tokens: Iterator[int], tokenizer: Tokenizer, stop_strings: Sequence[str] = ()) -> Iterator[str]:
    """Turn a token iterator into text pieces, ending before the first stop string.

    Holds back bytes of an incomplete UTF-8 character and any tail that could still grow into
    a stop string, so what is yielded never has to be taken back.
    """
    ids: list[int] = []
    emitted = 0  # characters of the decoded text already yielded
    for token in tokens:
        ids.append(token)
        text = tokenizer.decode_bytes(ids).decode("utf-8", errors="ignore")
        for stop in stop_strings:
            at = text.find(stop, max(0, emitted - len(stop)))
            if at != -1:
                if at > emitted:
                    yield text[emitted:at]
                return
        safe = len(text) - _longest_stop_prefix_suffix(text, stop_strings)
        if safe > emitted:
            yield text[emitted:safe]
            emitted = safe
    text = tokenizer.decode_bytes(ids).decode("utf-8", errors="ignore")
    if len(text) > emitted:
        yield text[emitted:]


def _longest_stop_prefix_suffix(text: str, stop_strings: Sequence[str]) -> int:
    """Length of the longest end of `text` that is the beginning of some stop string."""
    longest = 0
    for stop in stop_strings:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[-n:]):
                longest = n
                break
    return longest
