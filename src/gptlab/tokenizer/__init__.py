"""Tokenizers behind one protocol, and the ways to get one: by name or path, from a checkpoint's
description, or as the files of a Hugging Face folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gptlab.files import read_json
from gptlab.tokenizer.base import Tokenizer, document_ids
from gptlab.tokenizer.bytelevel import ByteLevelBPE, gguf_tokenizer, hf_tokenizer
from gptlab.tokenizer.char import CharTokenizer
from gptlab.tokenizer.gpt2 import GPT2Tokenizer
from gptlab.tokenizer.patterns import PATTERNS
from gptlab.tokenizer.scratch import BPETokenizer, BPEVocabulary, gpt2_scratch, load_bpe, save_bpe
from gptlab.tokenizer.sentencepiece import SentencePieceBPE, SentencePieceVocabulary
from gptlab.tokenizer.training import train_bpe

__all__ = ["BPETokenizer", "BPEVocabulary", "ByteLevelBPE", "CharTokenizer", "GPT2Tokenizer", "SentencePieceBPE",
           "Tokenizer", "cuts_at_lines", "document_ids", "get_tokenizer", "gguf_tokenizer", "gpt2_scratch", "hf_files",
           "hf_tokenizer", "load_bpe", "save_bpe", "tokenizer_from_dict", "train_bpe"]

KNOWN_TYPES = ("char", "gpt2", "gpt2-scratch", "bpe")
NAMES = "gpt2 (tiktoken), gpt2-scratch (gptlab's own BPE), char, or a trained tokenizer's folder or JSON file"


def get_tokenizer(name: str, text: str | None = None) -> Tokenizer:
    """A tokenizer by name or path: "gpt2" (tiktoken), "gpt2-scratch" (the same ids from our own BPE), "char"
    (its alphabet built from `text`, the training corpus), or a trained tokenizer's folder or JSON file
    (`bpe.json`, or any tokenizer description a checkpoint records)."""
    if name == "gpt2":
        return GPT2Tokenizer()
    if name == "gpt2-scratch":
        return gpt2_scratch()
    if name == "char":
        if text is None:
            raise ValueError("the char tokenizer builds its alphabet from the training text; pass text=...")
        return CharTokenizer.from_text(text)
    path = Path(name).expanduser()
    if path.is_dir():
        return load_bpe(path)
    if path.is_file():
        data = read_json(path)
        return load_bpe(path) if data.get("type") == "bpe" else tokenizer_from_dict(data)
    raise ValueError(f"unknown tokenizer {name!r} (no such file or folder); choose {NAMES}")


def tokenizer_from_dict(d: Mapping[str, Any], folder: Path | None = None) -> Tokenizer:
    """Rebuild the tokenizer a checkpoint was saved with, from its `to_dict()` description; files it names
    by a plain name are in the checkpoint's `folder` (`embedded.embedded` wrote them there)."""
    kind = d.get("type") if isinstance(d, Mapping) else None
    if folder is not None and kind in ("hf", "sentencepiece", "gpt2"):
        d = {key: _in_folder(folder, value) if key in ("path", "encoder", "vocab") else value
             for key, value in d.items()}
    if kind == "gpt2":
        return _gpt2_from_dict(d)
    if kind == "gpt2-scratch":
        return gpt2_scratch()
    if kind == "bpe":
        return BPETokenizer(BPEVocabulary.from_dict(d, "the recorded BPE tokenizer"))
    if kind in ("builtin", "gguf"):  # the vocabulary of a model file (e.g. the built-in SmolLM2)
        return gguf_tokenizer(d)
    if kind == "hf":  # a Hugging Face folder's tokenizer.json
        return hf_tokenizer(Path(d["path"]), d.get("name"))
    if kind == "sentencepiece":  # the SentencePiece vocabulary a checkpoint keeps
        path = Path(d["path"])
        return SentencePieceBPE(SentencePieceVocabulary.from_dict(read_json(path), str(path)),
                                {"type": "sentencepiece", "path": str(path.resolve())})
    if kind == "char":
        chars = d.get("chars")
        if not isinstance(chars, str) or not chars:
            raise ValueError(f"a char tokenizer description needs a non-empty 'chars' string, got {chars!r}")
        return CharTokenizer(chars)
    raise ValueError(
        f"unknown tokenizer description {d!r}: 'type' must be one of {', '.join(KNOWN_TYPES)}, builtin, gguf, hf, "
        "sentencepiece"
    )


def hf_files(tokenizer: Tokenizer) -> dict[str, str]:
    """The files (name → text) that carry `tokenizer` in a Hugging Face folder; none for a char tokenizer."""
    if isinstance(tokenizer, (GPT2Tokenizer, ByteLevelBPE, SentencePieceBPE, BPETokenizer)):
        return tokenizer.hf_files()
    return {}


def cuts_at_lines(tokenizer: Tokenizer) -> bool:
    """Whether a text cut at the start of a line (after a line break that follows, and before, a character
    other than white space) encodes to the ids of the whole text, so a corpus can be encoded in pieces.

    True for the regex pre-tokenizers (GPT-2's, GPT-4's and every family's byte-level cut): none of their
    pieces runs from a lone line break into the text after it, and a lone line break before a non-space
    is one piece whether the text ends after it or not. False for SentencePiece-style BPE (each piece
    would get the leading "▁" of a new text) and for a trained BPE's own regex, which may do anything."""
    if isinstance(tokenizer, (CharTokenizer, GPT2Tokenizer)):
        return True
    if isinstance(tokenizer, ByteLevelBPE):
        return not any("\n" in token for token in tokenizer.special_tokens)
    if isinstance(tokenizer, BPETokenizer) and tokenizer.vocabulary.pattern in PATTERNS.values():
        return not any("\n" in token for token in tokenizer.vocabulary.specials)
    return False


def _in_folder(folder: Path, name: Any) -> Any:
    """A file a checkpoint's tokenizer description names: a plain name is in the checkpoint's folder;
    a path (a checkpoint written before tokenizers were embedded) stays as it is."""
    return str(folder / name) if isinstance(name, str) and name and Path(name).name == name else name


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
