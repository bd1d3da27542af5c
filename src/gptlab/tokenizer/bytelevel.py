"""Byte-level BPE with any vocabulary (SmolLM2, other Llama-family models), run by tiktoken.

Built from a vocabulary listed by id and its merges, as GGUF files and HF `tokenizer.json`
store them. tiktoken merges by id, so the merges must create ids in increasing order (checked).
The split before BPE is SmolLM2's: every digit alone, then GPT-2's pattern.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tiktoken

from gptlab.files import builtin_model_path
from gptlab.tokenizer.gpt2 import bytes_to_unicode

# GPT-2's split with each digit on its own. A run of spaces before a digit stays whole, as when
# HF's Digits pre-tokenizer has cut the text at the digit first.
DIGITS_THEN_GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d|\p{N}| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""


class ByteLevelBPE:
    """A byte-level BPE tokenizer whose vocabulary and special tokens come from a model file."""

    def __init__(self, name: str, tokens: Sequence[str], merges: Sequence[str], special_ids: Sequence[int],
                 eos_id: int | None, source: dict[str, Any], pattern: str = DIGITS_THEN_GPT2) -> None:
        self.name, self.eos_id, self._source = name, eos_id, source
        self.vocab_size = len(tokens)
        byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
        specials = {tokens[i]: i for i in special_ids}
        ranks = {bytes(byte_of[c] for c in token): i for i, token in enumerate(tokens) if i not in special_ids}
        _check_merge_order(ranks, merges, byte_of)
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        # bytes the vocabulary never saw are dropped, as HF's BPE does without an unknown token
        self._unseen = re.compile("|".join(re.escape(bytes([b]).decode("latin-1")) for b in missing)) if missing else None
        self._encoding = tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks,
                                           special_tokens=specials, explicit_n_vocab=len(tokens))
        self.special_tokens = dict(specials)

    def encode(self, text: str) -> list[int]:
        """Token ids for text; special tokens written out (e.g. "<|im_start|>") become their ids."""
        if self._unseen is not None:
            raw = self._unseen.sub("", text.encode("utf-8").decode("latin-1"))
            text = raw.encode("latin-1").decode("utf-8", errors="ignore")
        return self._encoding.encode(text, allowed_special="all")

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the {self.name} vocabulary 0..{self.vocab_size - 1}")
        return self._encoding.decode_bytes(list(ids))

    def to_dict(self) -> dict[str, Any]:
        """Where the vocabulary comes from (e.g. the built-in SmolLM2 file), not the 49k tokens themselves."""
        return dict(self._source)


def _check_merge_order(ranks: dict[bytes, int], merges: Sequence[str], byte_of: dict[str, int]) -> None:
    previous = -1
    for number, merge in enumerate(merges):
        left, _, right = merge.partition(" ")
        merged = ranks.get(bytes(byte_of[c] for c in left + right))
        if merged is None or merged <= previous:
            raise ValueError(f"merge {number} ({merge!r}) does not create the next token id (got {merged}, "
                             f"after {previous}); tiktoken cannot run this vocabulary")
        previous = merged


CONTROL_TOKEN = 3  # GGUF token type of special tokens such as <|im_start|>


def tokenizer_from_gguf(reader: Any, name: str, source: dict[str, Any]) -> ByteLevelBPE:
    """The tokenizer stored in a GGUF file's metadata (a `gguf.GGUFReader`)."""
    fields = reader.fields
    if fields["tokenizer.ggml.model"].contents() != "gpt2":
        raise ValueError("only byte-level BPE (tokenizer.ggml.model = gpt2) GGUF tokenizers are supported")
    split = fields["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in fields else None
    if split != "smollm":
        raise ValueError(f"GGUF pre-tokenizer {split!r} is not supported; gptlab knows SmolLM's (\"smollm\")")
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    eos = fields["tokenizer.ggml.eos_token_id"].contents() if "tokenizer.ggml.eos_token_id" in fields else None
    specials = [i for i, kind in enumerate(types) if kind == CONTROL_TOKEN]
    return ByteLevelBPE(name, tokens, fields["tokenizer.ggml.merges"].contents(), specials,
                        None if eos is None else int(eos), source)


def gguf_tokenizer(description: dict[str, Any]) -> ByteLevelBPE:
    """The tokenizer a checkpoint recorded: a built-in model's (`name`) or a GGUF file's (`path`)."""
    from gguf import GGUFReader

    kind = description.get("type")
    path = builtin_model_path(description["name"]) if kind == "builtin" else Path(description["path"])
    reader = GGUFReader(path)
    return tokenizer_from_gguf(reader, str(reader.fields["general.name"].contents()), dict(description))
