"""Character-level tokenizer: one id per character, for tiny from-scratch models."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


class CharTokenizer:
    """Maps each character of a fixed alphabet to its index in that alphabet."""

    name = "char"
    eos_id: int | None = None

    def __init__(self, chars: str) -> None:
        if not chars:
            raise ValueError("a character tokenizer needs at least one character")
        duplicates = sorted(c for c, n in Counter(chars).items() if n > 1)
        if duplicates:
            raise ValueError(f"character tokenizer alphabet repeats {''.join(duplicates)!r}")
        self.chars = chars
        self._ids = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The tokenizer whose alphabet is the sorted set of characters in text."""
        if not text:
            raise ValueError("cannot build a character vocabulary from empty text")
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Token ids for text; every character must be in the alphabet."""
        try:
            return [self._ids[c] for c in text]
        except KeyError:
            pos = next(i for i, c in enumerate(text) if c not in self._ids)
            raise ValueError(
                f"character {text[pos]!r} at position {pos} is not in this tokenizer's "
                f"{self.vocab_size}-character vocabulary; build it from text that contains it"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        """Text for token ids."""
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside this tokenizer's vocabulary 0..{self.vocab_size - 1}")
        return "".join(self.chars[i] for i in ids)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """UTF-8 bytes for token ids (each token is a whole character, so never a partial one)."""
        return self.decode(ids).encode("utf-8")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description holding the alphabet."""
        return {"type": "char", "chars": self.chars}
