"""Text generation: prefill a KV cache with the prompt, then decode one token per step.

Generation is an iterator of token ids; the CLI, the REPL, a server stream and batch
evaluation all consume the same iterator.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from gptlab.fields import Range, check_ranges, setting
from gptlab.grammar import Grammar, GrammarState, constrain
from gptlab.model import GPT, KVCache
from gptlab.tokenizer import Tokenizer

log = logging.getLogger(__name__)
MAX_TOP_LOGPROBS = 20  # OpenAI's limit on alternatives per token
MIN_SHARED_PREFIX = 8  # prompts prefilled together that share this many first tokens compute them once


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability and the most likely alternatives at its place.

    Taken from the model's distribution before temperature, top-k and top-p, as OpenAI reports them.
    """

    id: int
    logprob: float
    top: tuple[tuple[int, float], ...]  # (id, logprob), most likely first


def token_logprob(logits: Tensor, token: int, settings: GenerationSettings) -> TokenLogprob | None:
    """`token`'s log-probability under `logits` (V,) and the `settings.logprobs` most likely (id, logprob)
    pairs, over the ids the tokenizer has (as they are picked); None when the settings ask for none."""
    top = settings.logprobs
    if top is None:
        return None
    logprobs = torch.log_softmax(allowed_logits(logits, settings.vocab_size).float(), dim=-1)  # (V,)
    best = torch.topk(logprobs, top) if top else None
    pairs = tuple(zip(best.indices.tolist(), best.values.tolist())) if best is not None else ()
    return TokenLogprob(token, float(logprobs[token]), pairs)


# Each setting's allowed values, written once: the CLI, the Python API and the server all check them here.
TEMPERATURE = Range(0, 2, note="0 = greedy")  # OpenAI's range; above 2 sampling is close to uniform noise
TOP_K = Range(low=1)
TOP_P = Range(0, 1, above=True)
SEED = Range(0, 2**63 - 1)  # what torch.Generator.manual_seed and the OpenAI API take


@dataclass(frozen=True)
class GenerationSettings:
    """How to pick each next token and when to stop: the defaults of the Python API and `gptlab generate`."""

    max_new_tokens: int = setting("tokens to generate at most", 64, bounds=Range(low=0))
    temperature: float = setting("sampling temperature; 0 = greedy (argmax), as in the OpenAI API", 1.0,
                                 bounds=TEMPERATURE)
    top_k: int | None = setting("sample only among the K most likely tokens", None, bounds=TOP_K)
    top_p: float | None = setting("nucleus sampling: only the most likely tokens whose probabilities add up to P",
                                  None, bounds=TOP_P)
    seed: int | None = setting("random seed: makes sampling (and a preset's random weights) reproducible", None,
                               bounds=SEED)
    stop_ids: tuple[int, ...] = setting("generation of a sequence ends at any of these ids (not emitted)", (),
                                        flag=False)
    end_of_text: bool = setting("with a tokenizer (Completion, responses), its end-of-text id stops too", True,
                                flag=False)
    stop_strings: tuple[str, ...] = setting("stop before this text (repeatable)", (), flag="stop")  # see `stream_text`
    kv_cache: bool = setting("keep keys and values of earlier tokens; --no-kv-cache recomputes the whole sequence "
                             "every step (slow; to compare with the cache)", True)
    logprobs: int | None = setting("report each token's log-probability and this many alternatives", None,
                                   flag=False, bounds=Range(0, MAX_TOP_LOGPROBS))
    vocab_size: int | None = setting("ids from here up are never picked: rows of a padded embedding that the "
                                     "tokenizer lacks (Qwen2.5, Phi-3, Pythia); `stopping_for` sets it", None,
                                     flag=False, bounds=Range(low=1))
    grammar: Grammar | None = setting("the text must follow this grammar (JSON under a schema): ids it does not "
                                      "allow next are never picked (`grammar.compile_grammar`)", None, flag=False)

    def __post_init__(self) -> None:
        check_ranges(self)
        if "" in self.stop_strings:  # as the OpenAI API (and our server) refuses it
            raise ValueError("a stop string must not be empty (--stop \"\"): it would end every answer before its "
                             "first token")

    def stopping_for(self, tokenizer: Tokenizer) -> GenerationSettings:
        """These settings as text generation with `tokenizer` runs them: its end-of-text id (when it
        has one and `end_of_text` is on) joins the stop ids, and only ids it has are picked (a model's
        embedding may have more rows than its tokenizer has tokens). The one place that decides it."""
        eos = tokenizer.eos_id
        vocab_size = min(tokenizer.vocab_size, self.vocab_size or tokenizer.vocab_size)
        if not self.end_of_text or eos is None or eos in self.stop_ids:
            return dataclasses.replace(self, vocab_size=vocab_size)
        return dataclasses.replace(self, stop_ids=(*self.stop_ids, eos), vocab_size=vocab_size)


def allowed_logits(logits: Tensor, vocab_size: int | None) -> Tensor:
    """`logits` (..., V) without the ids from `vocab_size` up, which the tokenizer has no token for; a
    view, and `logits` itself when nothing is cut, so a model without padding pays nothing."""
    if vocab_size is None or vocab_size >= logits.shape[-1]:
        return logits
    return logits[..., :vocab_size]


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


def new_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A random-number generator for one sequence: seeded (reproducible) or from fresh entropy."""
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    return generator


def pick_tokens(logits: Tensor, settings: Sequence[GenerationSettings],
                generators: Sequence[torch.Generator | None]) -> list[int]:
    """Next token of each row of `logits` (B, V), row b with its own settings and generator, so a
    sequence samples the same alone or beside others. Ids from a row's `vocab_size` up are never picked."""
    widest = max(s.vocab_size or logits.shape[-1] for s in settings)
    picked = allowed_logits(logits, widest).argmax(dim=-1).tolist()  # greedy rows, all at once
    for row, (row_settings, generator) in enumerate(zip(settings, generators, strict=True)):
        vocab_size = row_settings.vocab_size
        if row_settings.temperature > 0:
            picked[row] = int(sample_next(allowed_logits(logits[row : row + 1], vocab_size), row_settings.temperature,
                                          row_settings.top_k, row_settings.top_p, generator)[0])
        elif vocab_size is not None and picked[row] >= vocab_size:  # beside a row with a larger tokenizer
            picked[row] = int(logits[row, :vocab_size].argmax())
    return picked


def prefill_logits(model: GPT, prompts: Sequence[Sequence[int]], cache: KVCache, slots: Sequence[int]) -> Tensor:
    """Float32 logits (n, V) after each prompt, prefilled together into cache rows `slots`.

    A beginning that every prompt shares (a chat template, a system message) is computed once and
    its keys/values copied to each row; the rest goes in right-padded, one forward pass for all.
    """
    device = cache.keys[0].device
    shared = shared_prefix_length(prompts) if len(prompts) > 1 else 0
    if shared >= MIN_SHARED_PREFIX:
        model.prefill(torch.tensor([list(prompts[0][:shared])], device=device), cache, [slots[0]])
        cache.copy_prefix(slots[0], slots[1:], shared)
    else:
        shared = 0
    lengths = [len(p) - shared for p in prompts]
    ids = torch.zeros(len(prompts), max(lengths), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, : lengths[row]] = torch.tensor(list(prompt[shared:]))
    hidden = model.prefill(ids.to(device), cache, slots, start=shared)  # (n, T, C)
    last = hidden[torch.arange(len(prompts), device=device), torch.tensor(lengths, device=device) - 1]  # (n, C)
    return model.lm_head(last).float()


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt begins with, leaving each prompt at least one of its own."""
    longest = min(len(p) for p in prompts) - 1
    for at in range(longest):
        if any(p[at] != prompts[0][at] for p in prompts):
            return at
    return max(longest, 0)


def _recomputed_logits(model: GPT, sequences: Sequence[Sequence[int]], device: torch.device) -> Tensor:
    """Float32 logits (B, V) after each sequence, recomputed from scratch (no cache)."""
    rows = [model.lm_head(model.hidden(torch.tensor([list(seq)], device=device))[0, -1]) for seq in sequences]
    return torch.stack(rows).float()


def attention_span(last_position: int, max_len: int) -> int:
    """Cache places a decode step attends over when no row is past `last_position`: that, rounded
    up to a power of two (at least 64, at most the cache), so the step's shape changes only
    a few times while attention reads little more than it needs."""
    return min(max_len, max(64, 1 << last_position.bit_length()))


@dataclass(frozen=True)
class CompileReport:
    """How `compile_decode` went: seconds spent, or why decoding stays uncompiled."""

    seconds: float
    error: str | None = None  # None: the decode step is compiled


def compile_decode(model: GPT, rows: int = 1) -> CompileReport:
    """Compile the model's one-token decode step for up to `rows` rows and run it now, so compiling
    is paid (and timed) here, not in the first request. The graph is shape-generic (any cache
    length, any number of rows from 2 up); one row, which torch specialises, gets its own. Where
    torch.compile cannot run (no C++ compiler, an unsupported platform), the step stays eager and
    the report says why."""
    parameter = next(model.parameters())
    model.compile_decode_step()
    started = time.perf_counter()
    try:
        with torch.inference_mode():
            for width in sorted({1, rows}):  # each width attending over part of the cache, then all of it
                tokens, positions = (torch.zeros(width, dtype=torch.long, device=parameter.device) for _ in "tp")
                cache = KVCache.allocate(model.config, width, 128, parameter.device, parameter.dtype)
                for span in (64, 128):
                    model.decode_step(tokens, positions, cache, span)
    except Exception as error:  # torch.compile fails in many ways (compiler, platform, backend)
        model.compile_decode_step(enabled=False)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        log.warning("torch.compile is unavailable here (%s); decoding uncompiled", reason)
        return CompileReport(time.perf_counter() - started, reason)
    seconds = time.perf_counter() - started
    log.info("compiled the one-token decode step (%d row%s) in %.1f s", rows, "" if rows == 1 else "s", seconds)
    return CompileReport(seconds)


def decode_steps(
    model: GPT, prompts: Sequence[Sequence[int]], settings: GenerationSettings
) -> Iterator[Tensor]:
    """Yield the next token ids (B,) of every prompt, step by step.

    Stops after `max_new_tokens` steps or once every row has produced a stop id (or completed its
    grammar's text); rows that stopped keep yielding a stop id (-1 when there is none), which callers drop.
    """
    for next_ids, _ in _decode(model, prompts, settings):
        yield next_ids


@torch.inference_mode()
def _decode(
    model: GPT, prompts: Sequence[Sequence[int]], settings: GenerationSettings
) -> Iterator[tuple[Tensor, Tensor]]:
    """`decode_steps`, with the float32 logits (B, V) each step's ids were picked from.

    Each prompt is prefilled into its own cache row; then every step decodes one token per row,
    each row at its own position (no padding).
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    device = next(model.parameters()).device
    max_new_tokens = fit_new_tokens(settings.max_new_tokens, model.config.context_length)
    sequences = [fit_to_context(p, max_new_tokens, model.config.context_length)[0] for p in prompts]
    generators = [new_generator(settings.seed, device) for _ in sequences]
    stop = settings.stop_ids[0] if settings.stop_ids else -1
    finished = [False] * len(sequences)
    cache = None
    if settings.kv_cache:
        cache = KVCache.allocate(model.config, len(sequences), max(map(len, sequences)) + max_new_tokens, device,
                                 next(model.parameters()).dtype)
        logits = prefill_logits(model, sequences, cache, range(len(sequences)))
    else:  # recompute everything each step (for teaching and tests)
        logits = _recomputed_logits(model, sequences, device)
    positions = torch.tensor([len(seq) for seq in sequences], device=device)  # (B,) where each next token goes
    last_position = max(map(len, sequences))  # the furthest place any row writes next (host-side, no sync)
    states = [settings.grammar.start() if settings.grammar else None for _ in sequences]
    for step in range(max_new_tokens):
        picked = pick_tokens(constrain(logits, states, [settings.stop_ids] * len(states)),
                             [settings] * len(sequences), generators)
        next_ids = [stop if done else token for done, token in zip(finished, picked, strict=True)]
        finished = [done or token in settings.stop_ids for done, token in zip(finished, next_ids, strict=True)]
        finished = [done or _follow(state, token) for done, state, token in zip(finished, states, next_ids)]
        yield torch.tensor(next_ids, device=device), logits
        if all(finished) or step == max_new_tokens - 1:
            return
        if cache is not None:
            span = attention_span(last_position, cache.max_len)
            fed = [max(token, 0) for token in next_ids]  # a finished row without stop ids feeds any id
            logits = model.decode_step(torch.tensor(fed, device=device), positions, cache, span)
            positions += 1
            last_position += 1
        else:
            sequences = [[*seq, token] for seq, token in zip(sequences, next_ids, strict=True)]
            logits = _recomputed_logits(model, sequences, device)


def _follow(state: GrammarState | None, token: int) -> bool:
    """Move a sequence's grammar past its picked `token`; True when its text is now complete."""
    if state is None:
        return False
    state.advance(token)
    return state.complete


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
    """Generated ids for a batch of prompts (decoded together), each cut before its first stop id."""
    outputs: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    for step in decode_steps(model, prompts, settings):
        for row, token in enumerate(step.tolist()):
            done[row] = done[row] or token in settings.stop_ids or token < 0
            if not done[row]:
                outputs[row].append(token)
    return outputs


class TextCompletion(Protocol):
    """What serving code reads from a completion, whichever loop produces it (`Completion` here, or
    `engine.EngineCompletion`): text pieces while iterating, then `ids`, `finish_reason` and `logprobs`."""

    prompt_ids: list[int]  # the prompt as fitted to the context
    ids: list[int]
    finish_reason: str | None  # "stop" | "length" | "cancelled", once iteration ends
    logprobs: list[TokenLogprob]
    end: TokenLogprob | None  # the stop id that ended it (in neither `ids` nor the text), with logprobs asked for

    def __iter__(self) -> Iterator[str]: ...

    def cancel(self) -> None:
        """Stop generating at the next token (finish_reason "cancelled"); the client has gone."""


class TextStream:
    """A completion read as text pieces; afterwards, its token ids, logprobs and why it ended.

    The CLI prints the pieces and the server streams them; both read `ids` (usage counts),
    `logprobs` and `finish_reason` ("stop": a stop id or string; "length": `max_new_tokens` ran
    out; "cancelled": the reader left or cancelled) once the pieces are consumed. The prompt is
    fitted to the context first (`fit_to_context`), and the tokenizer's end-of-text ends it
    (`GenerationSettings.stopping_for`). Subclasses produce the tokens and honour `cancel`.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: Sequence[int], settings: GenerationSettings,
                 context_length: int) -> None:
        if not prompt_ids:
            raise ValueError("the prompt is empty after tokenization; give at least one character")
        self.tokenizer = tokenizer
        self.prompt_ids, max_new_tokens = fit_to_context(prompt_ids, settings.max_new_tokens, context_length)
        self.settings = dataclasses.replace(settings.stopping_for(tokenizer), max_new_tokens=max_new_tokens)
        self.ids: list[int] = []
        self.logprobs: list[TokenLogprob] = []  # filled when `settings.logprobs` is set
        self.end: TokenLogprob | None = None  # the stop id that ended it, scored when `settings.logprobs` is set
        self.finish_reason: str | None = None

    def __iter__(self) -> Iterator[str]:
        completed = False
        try:
            yield from stream_text(self._tokens(), self.tokenizer, self.settings.stop_strings)
            completed = True
        finally:
            if self.finish_reason is None:  # text ended at a stop string, or the reader left early
                self.cancel()
                self.finish_reason = "stop" if completed else "cancelled"

    def cancel(self) -> None:
        """Stop generating at the next token (finish_reason "cancelled")."""
        raise NotImplementedError

    def _tokens(self) -> Iterator[int]:
        """Generated ids, each recorded in `ids` (and `logprobs`); `finish_reason` set at the end."""
        raise NotImplementedError

    def _record(self, token: int, logprob: TokenLogprob | None) -> None:
        self.ids.append(token)
        if logprob is not None:
            self.logprobs.append(logprob)


class Completion(TextStream):
    """One prompt's completion, decoded here and now on the caller's thread (see `TextStream`)."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, prompt_ids: Sequence[int],
                 settings: GenerationSettings) -> None:
        super().__init__(tokenizer, prompt_ids, settings, model.config.context_length)
        self.model = model
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def _tokens(self) -> Iterator[int]:
        for step, logits in _decode(self.model, [self.prompt_ids], self.settings):
            if self._cancelled:
                self.finish_reason = "cancelled"
                return
            token = int(step[0])
            if token in self.settings.stop_ids:
                self.end = token_logprob(logits[0], token, self.settings)
                break
            self._record(token, token_logprob(logits[0], token, self.settings))
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
