"""gptlab's own byte-level BPE tokenizers, run by `bpe.BytePairEncoder` (pure Python, no tiktoken):
GPT-2's published vocabulary (`gpt2-scratch`) and vocabularies trained here (`gptlab tokenizer train`).

A vocabulary is its merges: ids 0..255 are the single bytes in GPT-2's order (printable characters
first, as `encoder.json` lists them), merge i makes id 256 + i, special tokens follow. That layout
is what tiktoken's and Hugging Face's GPT-2 loaders expect, so the exports give the same ids there.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from gptlab.files import fetch, read_json, write_text_atomically
from gptlab.models.gpt2 import GPT2_SPLIT
from gptlab.tokenizer.bpe import BytePairEncoder
from gptlab.tokenizer.bytelevel import Vocabulary, hf_tokenizer_files
from gptlab.tokenizer.gpt2 import ENDOFTEXT, N_BYTES, bytes_to_unicode, load_mergeable_ranks, read_merges
from gptlab.tokenizer.patterns import pattern_named, split_for

BYTE_ORDER = list(bytes_to_unicode())  # the byte of each id 0..255
CHAR_OF = bytes_to_unicode()  # byte → the printable character GPT-2's files write it as
BYTE_OF = {char: byte for byte, char in CHAR_OF.items()}
BPE_FILE = "bpe.json"  # a trained tokenizer's own file, inside the folder `gptlab tokenizer train` writes


@dataclass(frozen=True)
class BPEVocabulary:
    """A byte-level BPE vocabulary: the cut before BPE, the merges in order, the special tokens."""

    name: str  # shown in messages and by `gptlab info`
    pattern: str  # the regex that cuts text into pre-tokens
    merges: list[tuple[int, int]]  # merge i joins these two ids into id 256 + i
    specials: list[str]  # whole-text tokens after the merges' ids, in order; the first one ends a document

    @cached_property
    def tokens(self) -> list[bytes]:
        """The bytes of every id below the specials."""
        tokens = [bytes([b]) for b in BYTE_ORDER]
        for left, right in self.merges:
            tokens.append(tokens[left] + tokens[right])
        return tokens

    @property
    def size(self) -> int:
        return len(self.tokens) + len(self.specials)

    @property
    def special_ids(self) -> dict[str, int]:
        return {token: len(self.tokens) + n for n, token in enumerate(self.specials)}

    @property
    def eos_id(self) -> int | None:
        return len(self.tokens) if self.specials else None

    def token_texts(self) -> list[str]:
        """Every token as GPT-2's files write it (bytes as printable characters), specials as they are."""
        return ["".join(CHAR_OF[b] for b in token) for token in self.tokens] + list(self.specials)

    def to_dict(self) -> dict[str, Any]:
        """The one JSON file of a trained tokenizer, also recorded whole in checkpoints."""
        texts = self.token_texts()
        return {"type": "bpe", "name": self.name, "pattern": self.pattern, "specials": list(self.specials),
                "merges": [f"{texts[left]} {texts[right]}" for left, right in self.merges], "vocab": texts}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str) -> BPEVocabulary:
        """The vocabulary `to_dict` wrote, checked: every merge joins earlier tokens and `vocab` agrees."""
        for key, kind in (("name", str), ("pattern", str), ("specials", list), ("merges", list), ("vocab", list)):
            if not isinstance(d.get(key), kind):
                raise ValueError(f"{source}: field {key!r} must be a {kind.__name__} (a file `gptlab tokenizer "
                                 "train` wrote has it)")
        specials = d["specials"]
        if not all(isinstance(s, str) and s for s in specials) or len(set(specials)) < len(specials):
            raise ValueError(f"{source}: 'specials' must be distinct, non-empty strings; got {specials!r}")
        vocabulary = cls(d["name"], pattern_named(d["pattern"]), _merge_ids(d["merges"], source), specials)
        texts = vocabulary.token_texts()
        if d["vocab"] != texts:
            wrong = next((i for i, (a, b) in enumerate(zip(d["vocab"], texts)) if a != b),
                         min(len(texts), len(d["vocab"])))
            raise ValueError(f"{source}: 'vocab' disagrees with the merges and specials at id {wrong}; the file was "
                             "edited by hand? Train the tokenizer again")
        if len(set(vocabulary.tokens)) < len(vocabulary.tokens) or len(set(texts)) < len(texts):
            raise ValueError(f"{source}: two ids have the same token; each token must appear once")
        return vocabulary

    def gpt2_files(self) -> dict[str, str]:
        """`encoder.json` (token → id, specials included) and `vocab.bpe` (the merges), as GPT-2 ships them."""
        texts = self.token_texts()
        merges = "".join(f"{texts[left]} {texts[right]}\n" for left, right in self.merges)
        return {"encoder.json": json.dumps({text: i for i, text in enumerate(texts)}, ensure_ascii=False),
                "vocab.bpe": "#version: 0.2\n" + merges}

    def hf_files(self) -> dict[str, str]:
        """`tokenizer.json` and `tokenizer_config.json` for Hugging Face `tokenizers`/`transformers`."""
        texts = self.token_texts()
        as_model_file = Vocabulary(self.name, texts, [f"{texts[a]} {texts[b]}" for a, b in self.merges],
                                   list(self.special_ids.values()), self.eos_id, None)
        return hf_tokenizer_files(as_model_file, split_for(self.pattern))


def _merge_ids(merges: Sequence[Any], source: str) -> list[tuple[int, int]]:
    """Merges written as "left right" token texts → id pairs; each side must be a token made before."""
    ids = {CHAR_OF[b]: i for i, b in enumerate(BYTE_ORDER)}
    pairs = []
    for number, merge in enumerate(merges):
        left, _, right = merge.partition(" ") if isinstance(merge, str) else ("", "", "")
        if left not in ids or right not in ids:
            raise ValueError(f"{source}: merge {number} ({merge!r}) must join two tokens made before it, "
                             "written 'left right'")
        pairs.append((ids[left], ids[right]))
        ids.setdefault(left + right, N_BYTES + number)
    return pairs


class BPETokenizer:
    """A byte-level BPE tokenizer run by gptlab's own encoder; `eos_id` is the first special token."""

    def __init__(self, vocabulary: BPEVocabulary, description: dict[str, Any] | None = None) -> None:
        self.vocabulary, self._description = vocabulary, description
        self.name, self.vocab_size, self.eos_id = vocabulary.name, vocabulary.size, vocabulary.eos_id
        ranks = {token: i for i, token in enumerate(vocabulary.tokens)}
        self._encoder = BytePairEncoder(ranks, vocabulary.pattern, vocabulary.special_ids)

    def encode(self, text: str) -> list[int]:
        """Token ids for text; special tokens written out in it become their ids."""
        return self._encoder.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        """Text for token ids; bytes that are not valid UTF-8 become U+FFFD, as GPT-2 decodes."""
        return self._encoder.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """Raw bytes for token ids, which may end inside a multi-byte character."""
        return self._encoder.decode_bytes(ids)

    def to_dict(self) -> dict[str, Any]:
        """GPT-2's vocabulary by name; a trained one whole, so a checkpoint needs no other file."""
        return dict(self._description) if self._description is not None else self.vocabulary.to_dict()

    def hf_files(self) -> dict[str, str]:
        return self.vocabulary.hf_files()


def gpt2_scratch() -> BPETokenizer:
    """GPT-2's tokenizer (the published encoder.json + vocab.bpe) run by our own encoder: `gpt2-scratch`."""
    return BPETokenizer(gpt2_vocabulary(), {"type": "gpt2-scratch"})


@functools.lru_cache(maxsize=1)
def gpt2_vocabulary() -> BPEVocabulary:
    """GPT-2's merges, read (once per process) from the registry's files and checked against each other."""
    encoder, vocab = fetch("gpt2-encoder"), fetch("gpt2-vocab")
    ranks = load_mergeable_ranks(encoder, vocab)  # checked: merge i makes id 256 + i
    if any(ranks[bytes([b])] != i for i, b in enumerate(BYTE_ORDER)):
        raise ValueError(f"{encoder}: the single bytes must have ids 0..255 in GPT-2's order")
    merges = [(ranks[_bytes(left)], ranks[_bytes(right)]) for left, right in read_merges(vocab)]
    return BPEVocabulary("gpt2-scratch", GPT2_SPLIT.pattern, merges, [ENDOFTEXT])


def _bytes(text: str) -> bytes:
    return bytes(BYTE_OF[c] for c in text)


def save_bpe(vocabulary: BPEVocabulary, folder: Path) -> list[Path]:
    """Write a trained vocabulary into `folder`: its own `bpe.json`, GPT-2's two files and Hugging Face's."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {BPE_FILE: json.dumps(vocabulary.to_dict(), ensure_ascii=False, indent=1) + "\n",
             **vocabulary.gpt2_files(), **vocabulary.hf_files()}
    for name, text in files.items():
        write_text_atomically(folder / name, text)
    return [folder / name for name in files]


def load_bpe(path: Path) -> BPETokenizer:
    """A trained tokenizer from its folder (`bpe.json` inside) or from the JSON file itself."""
    file = path / BPE_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no {BPE_FILE} inside; give a folder `gptlab tokenizer train --out` wrote")
    data = read_json(file)
    if data.get("type") != "bpe":
        raise ValueError(f"{file}: not a gptlab BPE tokenizer ('type' is {data.get('type')!r}, expected 'bpe')")
    return BPETokenizer(BPEVocabulary.from_dict(data, str(file)))
