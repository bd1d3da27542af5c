"""SentencePiece-style BPE (Llama 2, Mistral, Phi-3, Gemma), in pure Python: text whose spaces are written "▁"
is merged up from single characters, by the rank of each pair (a Hugging Face `tokenizer.json`'s merges) or by
the score of the token a pair makes (a GGUF vocabulary, as llama.cpp merges it). A character without a token
becomes the `<0xNN>` tokens of its UTF-8 bytes (byte fallback), else the unknown token.

Added tokens (`<s>`, `<|user|>`) are cut out of the text first; each span between them is then normalized,
pre-tokenized and merged, with the steps the file names (`hf_steps`). Speed: a word is cut before each "▁"
that no token has a character in front of (no token can span such a cut), each piece's ids are cached, and a
new piece merges with a heap (`bpe.merge_pairs`), so a long text with no spaces costs O(n log n).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gptlab.tokenizer.base import check_ids
from gptlab.tokenizer.bpe import CACHE_LIMIT, CACHED_LENGTH, merge_pairs, refuse_surrogates
from gptlab.tokenizer.hf_steps import SPACE, Normalize, decoder, metaspace, normalizer

Matcher = tuple[re.Pattern[str], list[tuple[int, bool]]]  # one group per added token; (id, lstrip) by group


@dataclass(frozen=True)
class SentencePieceVocabulary:
    """A SentencePiece-style BPE vocabulary and the text steps around it, as a `tokenizer.json` holds them."""

    name: str  # the model's name, for messages
    source: str  # the file it was read from, for messages
    tokens: list[str]  # token text by id: "▁" stands for a space, "<0x0A>" for a byte
    vocab: dict[str, int]  # the BPE model's tokens → id (added tokens may be missing from it)
    merges: list[tuple[str, str, float]]  # (left, right, rank): lower ranks merge first
    added: list[dict[str, Any]]  # tokenizer.json's `added_tokens`: found whole in the text before anything else
    unk: str | None  # the unknown token, for a character with neither a token nor byte tokens
    byte_fallback: bool  # a character without a token becomes its bytes' <0xNN> tokens
    fuse_unk: bool  # unknown characters in a row become one unknown token
    ignore_merges: bool  # a word that is a token is that one token, whatever the merges would make of it
    steps: dict[str, Any]  # tokenizer.json's normalizer, pre_tokenizer, decoder and post_processor (JSON)
    eos_id: int | None  # the id that ends a turn or a document
    bos_id: int | None  # the id that begins a document
    adds_bos: bool  # the file's post-processor puts bos_id before every text (generation should too)

    def to_dict(self) -> dict[str, Any]:
        """The vocabulary whole, as JSON values: a checkpoint keeps it so. A `tokenizer.json` cannot hold a GGUF
        vocabulary exactly: its merges have ranks only, where a GGUF's pairs that make tokens of equal score
        tie, and a tie goes to the leftmost pair in the text."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> SentencePieceVocabulary:
        """The vocabulary `to_dict` described, read from the file `source`."""
        return cls(**{**data, "source": source, "merges": [tuple(merge) for merge in data["merges"]]})


class SentencePieceBPE:
    """A SentencePiece-style BPE tokenizer whose vocabulary and text steps come from a model file."""

    def __init__(self, vocabulary: SentencePieceVocabulary, source: dict[str, Any]) -> None:
        v, self.vocabulary, self._source = vocabulary, vocabulary, dict(source)
        self.name, self.vocab_size = v.name, len(v.tokens)
        self.eos_id, self.bos_id, self.adds_bos = v.eos_id, v.bos_id, v.adds_bos
        self.special_tokens = {token["content"]: token["id"] for token in v.added}
        self._normalize = normalizer(v.steps.get("normalizer"), v.source)
        self._metaspace = metaspace(v.steps.get("pre_tokenizer"), v.source)
        self._decode = decoder(v.steps.get("decoder"), v.source)
        self._raw_added = _matcher([t for t in v.added if not t.get("normalized")], str)
        self._normalized_added = _matcher([t for t in v.added if t.get("normalized")], self._normalize)
        self._pairs = _pair_ranks(v)
        if v.unk is not None and v.unk not in v.vocab:
            raise ValueError(f"{v.source}: the unknown token {v.unk!r} is not in the vocabulary")
        self._unk_id = None if v.unk is None else v.vocab[v.unk]
        self._byte_ids = [v.vocab.get(f"<0x{b:02X}>") for b in range(256)] if v.byte_fallback else []
        self._cut = _space_cut(v.vocab, self._metaspace.replacement if self._metaspace else SPACE)
        # Hugging Face decodes an added token it matches after normalization as its normalized text
        shown = {token["id"]: self._normalize(token["content"]) for token in v.added if token.get("normalized")}
        self._token_bytes = [shown.get(i, token).encode("utf-8") for i, token in enumerate(v.tokens)]
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        """Token ids for text of any length; added tokens written out (e.g. "<s>") become their ids."""
        refuse_surrogates(text)
        ids: list[int] = []
        for start, raw, token in _spans(text, self._raw_added):
            if token is not None:
                ids.append(token)
                continue
            for offset, span, token in _spans(self._normalize(raw), self._normalized_added):
                if token is not None:
                    ids.append(token)
                else:
                    ids += self._encode_span(span, at_start=start == 0 and offset == 0)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The bytes of ids through the file's decoder (spaces for "▁", bytes for <0xNN>, its strip rule)."""
        check_ids(ids, self.vocab_size, self.name)
        return self._decode([self._token_bytes[i] for i in ids])

    def to_dict(self) -> dict[str, Any]:
        """Where the vocabulary comes from (a tokenizer.json or GGUF file), not its tokens."""
        return dict(self._source)

    def hf_files(self) -> dict[str, str]:
        """`tokenizer.json` and `tokenizer_config.json` as a Hugging Face folder keeps them (name → text)."""
        v = self.vocabulary
        model = {"type": "BPE", "dropout": None, "unk_token": v.unk, "continuing_subword_prefix": None,
                 "end_of_word_suffix": None, "fuse_unk": v.fuse_unk, "byte_fallback": v.byte_fallback,
                 "ignore_merges": v.ignore_merges, "vocab": v.vocab,
                 "merges": [[left, right] for left, right, _ in sorted(v.merges, key=lambda merge: merge[2])]}
        steps = {key: v.steps.get(key) for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder")}
        tokenizer = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": v.added, **steps,
                     "model": model}
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                  "bos_token": None if v.bos_id is None else v.tokens[v.bos_id],
                  "eos_token": None if v.eos_id is None else v.tokens[v.eos_id], "unk_token": v.unk}
        return {"tokenizer.json": json.dumps(tokenizer, ensure_ascii=False),
                "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False) + "\n"}

    def _encode_span(self, span: str, at_start: bool) -> list[int]:
        """Ids of one normalized span of text between added tokens."""
        words = self._metaspace.words(span, at_start) if self._metaspace is not None else [span]
        ids: list[int] = []
        for word in words:
            if self.vocabulary.ignore_merges and (whole := self.vocabulary.vocab.get(word)) is not None:
                ids.append(whole)
                continue
            for piece in self._cut.split(word) if self._cut is not None else [word]:
                cached = self._cache.get(piece)
                ids += cached if cached is not None else self._encode_piece(piece)
        return ids

    def _encode_piece(self, piece: str) -> list[int]:
        """Characters → ids (a byte fallback or the unknown token for those without one), then merged.
        A pending unknown token waits for the next known character, as Hugging Face's BPE does."""
        vocab, unk, symbols, unknown = self.vocabulary.vocab, self._unk_id, [], False
        for char in piece:
            token = vocab.get(char)
            if token is not None:
                if unknown:
                    symbols.append(unk)
                    unknown = False
                symbols.append(token)
            elif self._byte_ids and None not in (fallback := [self._byte_ids[b] for b in char.encode("utf-8")]):
                symbols += fallback
            elif unk is not None:
                if unknown and not self.vocabulary.fuse_unk:
                    symbols.append(unk)
                unknown = True
        if unknown:
            symbols.append(unk)
        ids = merge_pairs(symbols, self._pairs)
        if len(piece) <= CACHED_LENGTH:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[piece] = ids
        return ids


def score_merges(tokens: Sequence[str], scores: Sequence[float],
                 mergeable: Sequence[bool]) -> list[tuple[str, str, float]]:
    """The merges a SentencePiece vocabulary implies (it lists scores, not merges): every way of cutting a
    token into two tokens makes it, the higher its score the sooner, as llama.cpp's tokenizer merges.
    Tokens not `mergeable` (byte tokens, whose text is not their bytes) are neither made nor parts."""
    ids = {token: i for i, (token, ok) in enumerate(zip(tokens, mergeable)) if ok}
    return [(token[:cut], token[cut:], -float(score))
            for token, score, ok in zip(tokens, scores, mergeable) if ok
            for cut in range(1, len(token)) if token[:cut] in ids and token[cut:] in ids]


def _pair_ranks(v: SentencePieceVocabulary) -> dict[tuple[int, int], tuple[float, int]]:
    """(left id, right id) → (rank, id of the token they make); a later merge of the same pair wins."""
    pairs = {}
    for number, (left, right, rank) in enumerate(v.merges):
        try:
            pairs[v.vocab[left], v.vocab[right]] = (rank, v.vocab[left + right])
        except KeyError:
            raise ValueError(f"{v.source}: merge {number} ({left!r} {right!r}) joins or makes a token the "
                             "vocabulary lacks") from None
    return pairs


def _matcher(added: Sequence[Mapping[str, Any]], normalize: Normalize) -> Matcher | None:
    """One regex finding the added tokens (the longest where two start together), with their whitespace
    rules: `rstrip` takes the white space after into the token (and `lstrip` the white space before, which
    `_spans` adds: a regex that looked for it would try every start in a run of spaces), `single_word`
    wants no word character on either side. Tokens matched after normalization are looked for in their
    normalized form."""
    found = sorted(((normalize(t["content"]), t) for t in added if t["content"]), key=lambda f: -len(f[0]))
    if not found:
        return None
    alternatives = []
    for content, token in found:
        body = f"({re.escape(content)})"
        if token.get("single_word"):
            body = rf"(?<!\w){body}(?!\w)"
        alternatives.append(body + (r"\s*" if token.get("rstrip") else ""))
    return re.compile("|".join(alternatives)), [(token["id"], bool(token.get("lstrip"))) for _, token in found]


def _spans(text: str, matcher: Matcher | None) -> Iterator[tuple[int, str, int | None]]:
    """(offset, text, None) for each non-empty stretch of ordinary text, (offset, "", id) for each added token."""
    at = 0
    if matcher is not None:
        pattern, tokens = matcher
        for match in pattern.finditer(text):
            token, lstrip = tokens[match.lastindex - 1]  # one group matched
            start = match.start()
            while lstrip and start > at and text[start - 1].isspace():
                start -= 1
            if start > at:
                yield at, text[at:start], None
            yield start, "", token
            at = match.end()
    if at < len(text):
        yield at, text[at:], None


def _space_cut(vocab: Mapping[str, int], space: str) -> re.Pattern[str] | None:
    """Where a word can be cut without changing its tokens: before a `space` that follows a character which
    no token has directly before a `space` (nor a space itself: runs of spaces are tokens). No token spans
    such a cut, so no merge crosses it and each piece merges alone. None when `space` is not a token."""
    if space not in vocab:
        return None
    before = {space}
    for token in vocab:
        at = token.find(space, 1)
        while at != -1:
            before.add(token[at - 1])
            at = token.find(space, at + 1)
    kept = "".join(re.escape(char) for char in sorted(before))
    return re.compile(f"(?<=[^{kept}])(?={re.escape(space)})")
