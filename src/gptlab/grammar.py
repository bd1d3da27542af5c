"""Constrained decoding: a grammar decides which tokens a sequence may pick next, so its text always parses.

A JSON schema (or "any JSON object") is compiled by llguidance, a well-kept grammar engine in Rust with no
torch dependency, against the bytes of every token of gptlab's tokenizer. Each sequence then follows the
grammar with its own state: before sampling, the ids it does not allow get a logit of -inf (`constrain`),
and after sampling the picked id moves its state on (`GrammarState.advance`). llguidance was chosen over
xgrammar (which pins torch and pulls triton) for that, and for compile errors that name the schema's part;
both compute a step's mask in well under a millisecond on a 49k vocabulary (BENCHMARKS.md has the cost).

JSON is written compactly with one space after ':' and ',' (`{"a": 1, "b": [2, 3]}`): with free white
space a weak model can pad forever, and a schema whose strings and numbers are bounded then bounds the
whole answer's length.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from gptlab.tokenizer import Tokenizer
from gptlab.tokenizer.bytelevel import ByteLevelBPE
from gptlab.tokenizer.scratch import BPETokenizer
from gptlab.tokenizer.sentencepiece import SentencePieceBPE

JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
ANY_OBJECT = {"type": "object"}  # "json_object": any JSON object, as OpenAI's JSON mode asks for
MAX_CACHED = 8  # tokenizers kept with their llguidance form (a server has one; tests make many)
_CACHED: dict[int, tuple[Tokenizer, Any]] = {}  # id(tokenizer) → (tokenizer, its llguidance tokenizer)


class GrammarError(ValueError):
    """A format the grammar engine cannot compile; the message names the part (and the engine's reason)."""


@dataclass(frozen=True)
class OutputFormat:
    """What a completion's text must be: any JSON object, or JSON valid under `schema`."""

    kind: Literal["json_object", "json_schema"]
    schema: Mapping[str, Any] | None = None  # json_schema: the JSON Schema the text must validate against


class Grammar:
    """A compiled format, shared by every sequence that follows it (each gets its own `GrammarState`)."""

    def __init__(self, matcher: Any) -> None:
        self._matcher = matcher  # llguidance's LLMatcher at the start of the text, never advanced

    def start(self) -> GrammarState:
        """A fresh state at the start of a sequence's text."""
        return GrammarState(self._matcher.deep_copy())


class GrammarState:
    """One sequence's place in its grammar."""

    def __init__(self, matcher: Any) -> None:
        self.matcher = matcher

    def advance(self, token: int) -> None:
        """Move past a picked id (`constrain` allowed it, so the grammar accepts it)."""
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"the grammar refused token {token}: {self.matcher.get_error()}")

    @property
    def complete(self) -> bool:
        """Whether the text is whole and nothing may follow it (the sequence should end now)."""
        return bool(self.matcher.is_stopped())


def compile_grammar(tokenizer: Tokenizer, output: OutputFormat) -> Grammar:
    """`output` compiled for `tokenizer`'s vocabulary. A schema the engine cannot compile raises
    `GrammarError` with the engine's reason, which names the part (a pointer, a keyword, a pattern)."""
    llguidance = _llguidance()
    schema = output.schema if output.kind == "json_schema" else ANY_OBJECT
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_OPTIONS)
    except ValueError as err:
        raise GrammarError(f"the JSON schema cannot be read: {err}") from None
    matcher = llguidance.LLMatcher(_grammar_tokenizer(tokenizer), grammar, log_level=0)
    if matcher.is_error():
        reason = " ".join(matcher.get_error().split())
        raise GrammarError(f"the JSON schema cannot be compiled: {reason}")
    return Grammar(matcher)


def constrain(logits: Tensor, states: Sequence[GrammarState | None], stop_ids: Sequence[Sequence[int]]) -> Tensor:
    """`logits` (n, V) where each row with a state may pick only the ids its grammar allows next (a copy;
    `logits` itself when no row has one). A row whose text is complete may also pick its own stop ids
    (a chat template's end of turn), so it ends as an unconstrained answer ends."""
    rows = [(state.matcher, row) for row, state in enumerate(states) if state is not None]
    if not rows:
        return logits
    llguidance = _llguidance()
    words = (logits.shape[-1] + 31) // 32
    bitmask = np.zeros((len(states), words), dtype=np.int32)
    for matcher, row in rows:  # on this thread: a pool's threads would contend with torch's for the cores
        llguidance.numpy.fill_next_token_bitmask(matcher, bitmask, row)
    allowed = torch.from_numpy(np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little"))  # (n, 32 * words)
    allowed = allowed[:, : logits.shape[-1]].to(device=logits.device, dtype=torch.bool)  # (n, V)
    for matcher, row in rows:
        if matcher.is_accepting():
            allowed[row, [i for i in stop_ids[row] if i < logits.shape[-1]]] = True
    masked = logits.masked_fill(~allowed, float("-inf"))
    free = torch.tensor([state is None for state in states], device=logits.device)
    return torch.where(free[:, None], logits, masked)


def special_ids(tokenizer: Tokenizer) -> set[int]:
    """Ids that stand for a control token (end of text, a chat template's markers), never for text."""
    specials: set[int] = set()
    if isinstance(tokenizer, (ByteLevelBPE, SentencePieceBPE)):
        specials.update(tokenizer.special_tokens.values())
    elif isinstance(tokenizer, BPETokenizer):
        specials.update(tokenizer.vocabulary.special_ids.values())
    for name in ("eos_id", "bos_id"):
        if getattr(tokenizer, name, None) is not None:
            specials.add(getattr(tokenizer, name))
    return specials


class _Vocabulary:
    """What llguidance's `TokenizerWrapper` reads: every id's bytes (control tokens marked with a 0xFF
    byte, which no text holds, so the grammar never writes them), the end id, and an encoder."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        specials = special_ids(tokenizer)
        self.tokenizer = tokenizer
        self.tokens = [(b"\xff" if i in specials else b"") + tokenizer.decode_bytes([i])
                       for i in range(tokenizer.vocab_size)]
        self.special_token_ids = sorted(specials)
        self.eos_token_id = tokenizer.eos_id
        self.bos_token_id = getattr(tokenizer, "bos_id", None)

    def __call__(self, text: str | bytes) -> list[int]:
        return self.tokenizer.encode(text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text)


def _grammar_tokenizer(tokenizer: Tokenizer) -> Any:
    """llguidance's view of `tokenizer`, built once per tokenizer (about 0.4 s for 49k tokens)."""
    cached = _CACHED.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    if tokenizer.eos_id is None:
        raise GrammarError(f"structured output needs a tokenizer with an end-of-text token; {tokenizer.name!r} "
                           "has none")
    llguidance = _llguidance()
    built = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Vocabulary(tokenizer)), n_vocab=tokenizer.vocab_size)
    if len(_CACHED) >= MAX_CACHED:
        _CACHED.clear()
    _CACHED[id(tokenizer)] = (tokenizer, built)
    return built


def _llguidance() -> Any:
    """The grammar engine, imported on first use: it is an extra (`pip install gptlab[structured]`)."""
    try:
        import llguidance
        import llguidance.numpy
    except ImportError:
        raise GrammarError("structured output needs llguidance: pip install 'gptlab[structured]'") from None
    return llguidance
