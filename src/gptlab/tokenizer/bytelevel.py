"""Byte-level BPE with a model file's own vocabulary (SmolLM2, other Llama-family models), run by tiktoken,
and the readers of a model file's tokenizer, which hand SentencePiece-style vocabularies (Llama 2, Mistral,
Phi-3, Gemma) to `sentencepiece_files`.

Built from a vocabulary listed by id and its merges, as GGUF files and Hugging Face
`tokenizer.json` store them. The cut before BPE is the one the file names, found among the model
families' (`gptlab.models`); a tokenizer.json may compose the text to Unicode NFC first (Qwen,
Pythia). Added tokens are found in the text before either, the longest first, as Hugging Face finds
them. tiktoken merges by id, so the merges must create ids in increasing order (checked; several
merges may create one id, as in vocabularies converted from tiktoken's, e.g. Llama 3's, which list
every pair that spells a token). It writes itself back as a `tokenizer.json`, so an export carries
its tokenizer.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken

from gptlab.files import builtin_model_path, read_json
from gptlab.models import PreTokenizer, pre_tokenizer
from gptlab.tokenizer.base import check_ids
from gptlab.tokenizer.chunks import safe_pieces
from gptlab.tokenizer.gpt2 import bytes_to_unicode
from gptlab.tokenizer.hf_folder import begin_token, special_id, token_ids
from gptlab.tokenizer.hf_steps import bos_template
from gptlab.tokenizer.sentencepiece import SentencePieceBPE
from gptlab.tokenizer.sentencepiece_files import GGUF_CONTROL, gguf_sentencepiece, hf_sentencepiece, is_sentencepiece

KINDS = ("byte-level BPE (GPT-2, Llama 3, Qwen, OLMo 2, Pythia, SmolLM2) and SentencePiece-style BPE (Llama 2, "
         "Mistral, Phi-3, Gemma)")
BYTE_LEVEL_DECODER = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}


@dataclass(frozen=True)
class Vocabulary:
    """A byte-level BPE vocabulary as a model file stores it."""

    name: str  # the model's name, for messages
    tokens: list[str]  # token text by id, in GPT-2's byte-to-character alphabet
    merges: list[str]  # "left right" pairs, in merge order
    special_ids: list[int]  # tokens matched whole in text (e.g. <|im_start|>), never made by merges
    eos_id: int | None  # the id that ends a turn or a document
    pre_tokenizer: str | dict[str, Any] | None  # the cut the file names: GGUF by name, tokenizer.json by spec
    bos_id: int | None = None  # the id that begins a document
    adds_bos: bool = False  # the file puts bos_id before every text (its post-processor, GGUF add_bos_token)
    nfc: bool = False  # the file composes text to Unicode NFC before the cut (tokenizer.json normalizer: Qwen, Pythia)


class ByteLevelBPE:
    """A byte-level BPE tokenizer whose vocabulary and special tokens come from a model file."""

    def __init__(self, vocabulary: Vocabulary, cut: PreTokenizer, source: dict[str, Any]) -> None:
        self.vocabulary, self.pre_tokenizer, self._source = vocabulary, cut, source
        self.name, self.eos_id, self.vocab_size = vocabulary.name, vocabulary.eos_id, len(vocabulary.tokens)
        self.bos_id, self.adds_bos = vocabulary.bos_id, vocabulary.adds_bos
        tokens, special_ids = vocabulary.tokens, set(vocabulary.special_ids)
        byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
        self.special_tokens = {tokens[i]: i for i in vocabulary.special_ids}
        try:
            ranks = {bytes(byte_of[c] for c in token): i for i, token in enumerate(tokens) if i not in special_ids}
        except KeyError as err:
            raise ValueError(f"{vocabulary.name}: token character {err.args[0]!r} is not in the byte-level "
                             "alphabet; this is not a byte-level BPE vocabulary") from None
        _check_merge_order(ranks, vocabulary.merges, byte_of)
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        # bytes the vocabulary never saw are dropped, as HF's BPE does without an unknown token
        unseen = "|".join(re.escape(bytes([b]).decode("latin-1")) for b in missing)
        self._unseen = re.compile(unseen) if missing else None
        added = "|".join(re.escape(token) for token in sorted(self.special_tokens, key=len, reverse=True))
        self._added = re.compile(f"({added})") if added else None  # one group: split() keeps what it matched
        self._encoding = tiktoken.Encoding(name=self.name, pat_str=cut.pattern, mergeable_ranks=ranks,
                                           special_tokens=self.special_tokens, explicit_n_vocab=len(tokens))

    def encode(self, text: str) -> list[int]:
        """Token ids for text of any length; added tokens written out (e.g. "<|im_start|>") become their ids."""
        parts = self._added.split(text) if self._added is not None else [text]
        ids: list[int] = []
        for number, part in enumerate(parts):  # added tokens at odd places, the text around them at even ones
            if number % 2:
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self._encode_text(part))
        return ids

    def _encode_text(self, text: str) -> list[int]:
        """Ids of text between added tokens: normalized (NFC never composes across an added token), cut, merged."""
        if self.vocabulary.nfc:
            text = unicodedata.normalize("NFC", text)
        if self._unseen is not None:
            raw = self._unseen.sub("", text.encode("utf-8").decode("latin-1"))
            text = raw.encode("latin-1").decode("utf-8", errors="ignore")
        return [i for piece in safe_pieces(text) for i in self._encoding.encode_ordinary(piece)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        check_ids(ids, self.vocab_size, self.name)
        return self._encoding.decode_bytes(list(ids))

    def to_dict(self) -> dict[str, Any]:
        """Where the vocabulary comes from (e.g. the built-in SmolLM2 file), not the 49k tokens themselves."""
        return dict(self._source)

    def hf_files(self) -> dict[str, str]:
        """`tokenizer.json` and `tokenizer_config.json` as a Hugging Face folder keeps them (name → text)."""
        return hf_tokenizer_files(self.vocabulary, self.pre_tokenizer)


def hf_tokenizer_files(vocab: Vocabulary, cut: PreTokenizer) -> dict[str, str]:
    """A byte-level BPE vocabulary as Hugging Face `tokenizers` saves one: `tokenizer.json` (vocabulary,
    merges, special tokens, its normalizer, the cut before BPE, the BOS it adds) and `tokenizer_config.json`
    (its begin and end tokens)."""
    added = [{"id": i, "content": vocab.tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i in vocab.special_ids]
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
             "vocab": {token: i for i, token in enumerate(vocab.tokens)},
             "merges": [[left, right] for left, _, right in (merge.partition(" ") for merge in vocab.merges)]}
    bos = None if vocab.bos_id is None else vocab.tokens[vocab.bos_id]
    template = bos_template(bos, vocab.bos_id) if vocab.adds_bos and vocab.bos_id is not None and bos else None
    tokenizer = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
                 "normalizer": {"type": "NFC"} if vocab.nfc else None, "pre_tokenizer": cut.hf,
                 "post_processor": template, "decoder": BYTE_LEVEL_DECODER, "model": model}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos,
              "eos_token": None if vocab.eos_id is None else vocab.tokens[vocab.eos_id]}
    return {"tokenizer.json": json.dumps(tokenizer, ensure_ascii=False),
            "tokenizer_config.json": json.dumps(config, indent=2) + "\n"}


def _check_merge_order(ranks: dict[bytes, int], merges: Sequence[str], byte_of: dict[str, int]) -> None:
    """Refuse merges tiktoken would run in another order: each must create the id of the one before or a later one."""
    previous = -1
    for number, merge in enumerate(merges):
        left, _, right = merge.partition(" ")
        merged = ranks.get(bytes(byte_of[c] for c in left + right))
        if merged is None or merged < previous:
            raise ValueError(f"merge {number} ({merge!r}) does not create the next token id (got {merged}, "
                             f"after {previous}); tiktoken cannot run this vocabulary")
        previous = merged


def gguf_tokenizer(description: Mapping[str, Any],
                   fields: Mapping[str, Any] | None = None) -> ByteLevelBPE | SentencePieceBPE:
    """The tokenizer in a GGUF file's metadata, a built-in model's (`name`) or any file's (`path`), of the kind
    `tokenizer.ggml.model` names: gpt2 (byte-level BPE) or llama (SentencePiece-style BPE). A byte-level
    vocabulary is cut by the name `tokenizer.ggml.pre` gives, without normalizing the text, as llama.cpp runs it
    (GGUF keeps no normalizer: a Qwen or Pythia file there skips the NFC its tokenizer.json applies).
    `fields`: the file's fields when the caller has read them already (parsing a 150k-token vocabulary
    takes seconds; loading a model need not pay it twice)."""
    from gguf import GGUFReader

    kind = description.get("type")
    path = builtin_model_path(description["name"]) if kind == "builtin" else Path(description["path"])
    if fields is None:
        try:
            fields = GGUFReader(path).fields
        except (ValueError, OSError) as err:
            raise ValueError(f"{path}: not a readable GGUF file ({err})") from err

    def value(key: str, default: Any = None) -> Any:
        return fields[key].contents() if key in fields else default

    model = value("tokenizer.ggml.model")
    if model == "llama":
        return gguf_sentencepiece(path, value, description)
    if model != "gpt2":
        raise ValueError(f"{path}: tokenizer.ggml.model {model!r} is not supported; gptlab reads {KINDS} "
                         "(tokenizer.ggml.model gpt2 and llama)")
    missing = [key for key in ("tokens", "merges", "token_type") if f"tokenizer.ggml.{key}" not in fields]
    if missing:
        raise ValueError(f"{path}: a byte-level BPE vocabulary (tokenizer.ggml.model gpt2) needs "
                         f"{', '.join(f'tokenizer.ggml.{key}' for key in missing)}, which this file lacks")
    eos, bos = value("tokenizer.ggml.eos_token_id"), value("tokenizer.ggml.bos_token_id")
    vocabulary = Vocabulary(
        name=str(value("general.name", path.stem)), tokens=value("tokenizer.ggml.tokens"),
        merges=value("tokenizer.ggml.merges"), eos_id=None if eos is None else int(eos),
        special_ids=[i for i, kind in enumerate(value("tokenizer.ggml.token_type")) if kind == GGUF_CONTROL],
        pre_tokenizer=value("tokenizer.ggml.pre"), bos_id=None if bos is None else int(bos),
        adds_bos=bos is not None and bool(value("tokenizer.ggml.add_bos_token", False)))
    return ByteLevelBPE(vocabulary, pre_tokenizer(vocabulary.pre_tokenizer, str(path)), dict(description))


def hf_tokenizer(path: Path, name: str | None = None) -> ByteLevelBPE | SentencePieceBPE:
    """The tokenizer of a Hugging Face folder, of the kind its `tokenizer.json` is (byte-level or
    SentencePiece-style BPE), with the begin and end ids the folder names; `name` (for messages)
    defaults to the folder's."""
    data = read_json(path)
    model = data["model"] if isinstance(data.get("model"), dict) else {}
    if model.get("type") != "BPE":
        raise ValueError(f"{path}: tokenizer model {model.get('type')!r} is not supported; gptlab reads {KINDS}")
    if is_sentencepiece(data):
        return hf_sentencepiece(path, data, name)
    ids = token_ids(path, data)
    by_id = {i: token for token, i in ids.items()}
    bos_id, adds_bos = begin_token(path, data, ids)
    vocabulary = Vocabulary(
        name=name or path.parent.name, tokens=[by_id[i] for i in range(len(ids))],
        merges=[m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])],
        special_ids=sorted(token["id"] for token in data.get("added_tokens") or []),
        eos_id=special_id(path.parent, ids, "eos"), pre_tokenizer=data.get("pre_tokenizer"), bos_id=bos_id,
        adds_bos=adds_bos, nfc=_composes(path, data.get("normalizer")))
    cut = pre_tokenizer(vocabulary.pre_tokenizer, str(path))
    return ByteLevelBPE(vocabulary, cut, {"type": "hf", "path": str(path.resolve())})


def _composes(path: Path, spec: Any) -> bool:
    """Whether a byte-level tokenizer.json composes text to Unicode NFC before the cut (the normalizer of
    Qwen's and Pythia's); a normalizer that does anything else is refused."""
    if spec is None:
        return False
    if isinstance(spec, dict) and spec.get("type") == "NFC":
        return True
    raise ValueError(f"{path}: normalizer {json.dumps(spec)} is not supported for byte-level BPE; gptlab applies "
                     "NFC (Qwen, Pythia) or none")
