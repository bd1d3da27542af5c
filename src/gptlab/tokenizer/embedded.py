"""A tokenizer carried inside a checkpoint folder, and what identifies a tokenizer's ids.

A tokenizer read from a model file (a Hugging Face folder's tokenizer.json, a GGUF file, an OpenAI
folder's encoder.json and vocab.bpe) describes itself by that file's path. A checkpoint that kept the
path would stop loading once the source is moved or cleaned, or silently change when it is edited,
so a checkpoint writes the tokenizer's own files beside its weights (Hugging Face's `tokenizer.json` for
byte-level BPE, gptlab's `sentencepiece.json` for SentencePiece-style BPE, GPT-2's `vocab.json` + `merges.txt`)
and records them by name, relative to its folder.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from gptlab.tokenizer.base import Tokenizer
from gptlab.tokenizer.bytelevel import ByteLevelBPE
from gptlab.tokenizer.gpt2 import GPT2Tokenizer
from gptlab.tokenizer.sentencepiece import SentencePieceBPE

FILE_SOURCES = ("hf", "gguf", "sentencepiece")  # descriptions that point at a file; "builtin" names a package's
SENTENCEPIECE_FILE = "sentencepiece.json"


def embedded(tokenizer: Tokenizer) -> tuple[dict[str, Any], dict[str, str]]:
    """(the description a checkpoint records, the files it writes beside it: name → text). A tokenizer
    described by a file's path gets its own files, named in the description relative to the folder;
    any other (GPT-2's published one, a trained BPE, char) is whole in its description already."""
    description = tokenizer.to_dict()
    if isinstance(tokenizer, ByteLevelBPE) and description.get("type") in FILE_SOURCES:
        return {"type": "hf", "path": "tokenizer.json", "name": tokenizer.name}, tokenizer.hf_files()
    if isinstance(tokenizer, SentencePieceBPE) and description.get("type") in FILE_SOURCES:
        vocabulary = json.dumps(tokenizer.vocabulary.to_dict(), ensure_ascii=False)
        return {"type": "sentencepiece", "path": SENTENCEPIECE_FILE}, {SENTENCEPIECE_FILE: vocabulary}
    if isinstance(tokenizer, GPT2Tokenizer) and "encoder" in description:  # a folder's own GPT-2 files
        return {"type": "gpt2", "encoder": "vocab.json", "vocab": "merges.txt"}, tokenizer.hf_files()
    return description, {}


def fingerprint(tokenizer: Tokenizer) -> str:
    """The sha256 of what decides the tokenizer's ids (its embedded description and files), not of
    where it was read from: a token cache stays valid when the source folder moves, and not when it
    is edited in place."""
    description, files = embedded(tokenizer)
    digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode())
    for name, text in sorted(files.items()):
        digest.update(f"\0{name}\0".encode())
        digest.update(text.encode("utf-8"))
    return digest.hexdigest()
