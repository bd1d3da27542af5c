"""The interface every tokenizer offers, so data, training and generation never care which one is used."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class Tokenizer(Protocol):
    """Text <-> token ids, plus a JSON description saved with checkpoints to rebuild it."""

    @property
    def name(self) -> str:
        """Short kind name, e.g. "gpt2" or "char"."""
        ...

    @property
    def vocab_size(self) -> int:
        """Number of ids the model's embedding must cover."""
        ...

    @property
    def eos_id(self) -> int | None:
        """Id that ends a document (generation stops on it), or None when there is none."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids for text."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text for token ids."""
        ...

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """Raw bytes for token ids, so a stream can hold back an incomplete UTF-8 character."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description that `tokenizer_from_dict` turns back into an equal tokenizer."""
        ...


def document_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of `text` read as the start of a document: after the tokenizer's BOS where its file adds one
    (Llama, Gemma: what HF tokenizers' `encode` does by default), so a raw prompt reaches the model as its
    training documents did. Chat templates write their own BOS and are encoded without this."""
    ids = tokenizer.encode(text)
    bos = getattr(tokenizer, "bos_id", None)  # file tokenizers know theirs; GPT-2's BPE and char have none
    if getattr(tokenizer, "adds_bos", False) and bos is not None and ids[:1] != [bos]:
        return [bos, *ids]
    return ids


def check_ids(ids: Sequence[int], vocab_size: int, name: str) -> None:
    """Refuse an id the tokenizer has no token for, naming it (a model's padded rows, a corrupt request)."""
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(f"token id {bad[0]} is outside the {name} vocabulary 0..{vocab_size - 1}")
