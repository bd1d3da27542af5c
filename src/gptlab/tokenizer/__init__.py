"""Tokenizers behind one protocol, and the ways to get one: by name, from a checkpoint's description,
or as the files of a Hugging Face folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gptlab.tokenizer.base import Tokenizer
from gptlab.tokenizer.bytelevel import ByteLevelBPE, gguf_tokenizer, hf_tokenizer
from gptlab.tokenizer.char import CharTokenizer
from gptlab.tokenizer.gpt2 import GPT2Tokenizer

__all__ = ["ByteLevelBPE", "CharTokenizer", "GPT2Tokenizer", "Tokenizer", "get_tokenizer", "hf_files",
           "hf_tokenizer", "tokenizer_from_dict"]

KNOWN_TYPES = ("char", "gpt2")


def get_tokenizer(name: str, text: str | None = None) -> Tokenizer:
    """A tokenizer by name; "char" builds its alphabet from text (the training corpus), "gpt2" ignores text."""
    if name == "gpt2":
        return GPT2Tokenizer()
    if name == "char":
        if text is None:
            raise ValueError("the char tokenizer builds its alphabet from the training text; pass text=...")
        return CharTokenizer.from_text(text)
    raise ValueError(f"unknown tokenizer {name!r}; choose one of: {', '.join(KNOWN_TYPES)}")


def tokenizer_from_dict(d: Mapping[str, Any]) -> Tokenizer:
    """Rebuild the tokenizer a checkpoint was saved with, from its `to_dict()` description."""
    kind = d.get("type") if isinstance(d, Mapping) else None
    if kind == "gpt2":
        return _gpt2_from_dict(d)
    if kind in ("builtin", "gguf"):  # the vocabulary of a model file (e.g. the built-in SmolLM2)
        return gguf_tokenizer(d)
    if kind == "hf":  # a Hugging Face folder's tokenizer.json
        return hf_tokenizer(Path(d["path"]))
    if kind == "char":
        chars = d.get("chars")
        if not isinstance(chars, str) or not chars:
            raise ValueError(f"a char tokenizer description needs a non-empty 'chars' string, got {chars!r}")
        return CharTokenizer(chars)
    raise ValueError(
        f"unknown tokenizer description {d!r}: 'type' must be one of {', '.join(KNOWN_TYPES)}, builtin, gguf, hf"
    )


def hf_files(tokenizer: Tokenizer) -> dict[str, str]:
    """The files (name → text) that carry `tokenizer` in a Hugging Face folder; none for a char tokenizer."""
    if isinstance(tokenizer, (GPT2Tokenizer, ByteLevelBPE)):
        return tokenizer.hf_files()
    return {}


def _gpt2_from_dict(d: Mapping[str, Any]) -> GPT2Tokenizer:
    """GPT-2's published files, or the encoder/vocab pair a checkpoint recorded by path."""
    if "encoder" not in d and "vocab" not in d:
        return GPT2Tokenizer()
    for key in ("encoder", "vocab"):
        if not isinstance(d.get(key), str) or not Path(d[key]).is_file():
            raise FileNotFoundError(
                f"the checkpoint's GPT-2 tokenizer {key} file {d.get(key)!r} is missing; it was recorded from the "
                "folder the model was first loaded from: put the file back there"
            )
    return GPT2Tokenizer(d["encoder"], d["vocab"])
