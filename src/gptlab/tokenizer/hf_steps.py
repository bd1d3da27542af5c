"""The text steps a Hugging Face `tokenizer.json` puts around a SentencePiece-style BPE model, read once from
their JSON: the normalizer (Prepend, Replace), the Metaspace pre-tokenizer, the decoder (Replace, ByteFallback,
Fuse, Strip, Metaspace) and the BOS token a TemplateProcessing post-processor puts first.

A step gptlab does not run is refused naming the file and the steps it takes. Decoders run on the UTF-8
bytes of the token strings, so a byte token (`<0xE6>`) can stand for part of a character until the rest
arrives; where Hugging Face writes U+FFFD per invalid byte, `bytes.decode(errors="replace")` writes one per
invalid run. `llama_steps` and `bos_template` write the JSON of the steps llama.cpp runs on a GGUF vocabulary.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SPACE = "▁"  # U+2581, SentencePiece's visible space
PREPEND_SCHEMES = ("always", "first", "never")
STEPS_TAKEN = ("normalizers Prepend and Replace (string patterns), the Metaspace pre-tokenizer, decoders Replace, "
               "ByteFallback, Fuse, Strip and Metaspace")

Normalize = Callable[[str], str]
DecodeStep = Callable[[list[bytes]], list[bytes]]


def _refuse(source: str, what: str, spec: Any) -> ValueError:
    shown = json.dumps(spec, ensure_ascii=False) if isinstance(spec, (dict, list)) else repr(spec)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return ValueError(f"{source}: {what} {shown} is not supported; gptlab reads byte-level BPE (NFC or no normalizer) "
                      f"and SentencePiece-style BPE with {STEPS_TAKEN}")


def _parts(spec: Mapping[str, Any], key: str) -> list[Any]:
    """The steps of a Sequence (under `key`), or the one step itself."""
    return list(spec.get(key) or []) if spec.get("type") == "Sequence" else [spec]


def _string_pattern(spec: Mapping[str, Any], source: str, what: str) -> tuple[str, str]:
    """(pattern, content) of a Replace step whose pattern is a plain string."""
    pattern, content = spec.get("pattern"), spec.get("content")
    if not (isinstance(pattern, dict) and isinstance(pattern.get("String"), str) and pattern["String"]
            and isinstance(content, str)):
        raise _refuse(source, what, spec)
    return pattern["String"], content


def _prepend(prefix: str) -> Normalize:
    """Prepend `prefix` to a non-empty span."""
    return lambda text: prefix + text if text else text


def _replace(old: str, new: str) -> Normalize:
    """Replace every `old` in a span by `new`."""
    return lambda text: text.replace(old, new)


def normalizer(spec: Mapping[str, Any] | None, source: str) -> Normalize:
    """The file's normalizer as one function of a span of text (the text between added tokens)."""
    steps: list[Normalize] = []
    for part in _parts(spec, "normalizers") if spec is not None else []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "Prepend" and isinstance(part.get("prepend"), str):
            steps.append(_prepend(part["prepend"]))
        elif kind == "Replace":
            old, new = _string_pattern(part, source, "normalizer")
            steps.append(_replace(old, new))
        else:
            raise _refuse(source, "normalizer", part)

    def normalize(text: str) -> str:
        for step in steps:
            text = step(text)
        return text

    return normalize


@dataclass(frozen=True)
class Metaspace:
    """The Metaspace pre-tokenizer: spaces become `replacement`, one is put before the text, words split."""

    replacement: str  # the character standing for a space ("▁")
    prepend: str  # "always": before every span of text; "first": before the text's first span only; "never"
    split: bool  # cut the text into words, each starting at a replacement character

    def words(self, text: str, at_start: bool) -> list[str]:
        """The words of one span of text; `at_start`: the span begins the whole text."""
        text = text.replace(" ", self.replacement)
        wanted = self.prepend == "always" or (self.prepend == "first" and at_start)
        if wanted and not text.startswith(self.replacement):
            text = self.replacement + text
        if not self.split:
            return [text]
        mark = re.escape(self.replacement)
        return re.findall(f"[^{mark}]+|{mark}[^{mark}]*", text)  # each word starts at a mark, but the first


def metaspace(spec: Mapping[str, Any] | None, source: str) -> Metaspace | None:
    """The file's pre-tokenizer: none, or Metaspace (alone or as a one-step Sequence)."""
    if spec is None:
        return None
    parts = _parts(spec, "pretokenizers")
    part = parts[0] if len(parts) == 1 and isinstance(parts[0], dict) else spec
    if part.get("type") != "Metaspace" or not isinstance(part.get("replacement"), str) \
            or len(part["replacement"]) != 1:
        raise _refuse(source, "pre-tokenizer", spec)
    return Metaspace(part["replacement"], _prepend_scheme(part, source), bool(part.get("split", True)))


def _prepend_scheme(spec: Mapping[str, Any], source: str) -> str:
    """Metaspace's `prepend_scheme`, or the older `add_prefix_space` flag it replaced."""
    scheme = spec.get("prepend_scheme", "always" if spec.get("add_prefix_space", True) else "never")
    if scheme not in PREPEND_SCHEMES:
        raise ValueError(f"{source}: Metaspace prepend_scheme {scheme!r} is not one of {', '.join(PREPEND_SCHEMES)}")
    return scheme


def decoder(spec: Mapping[str, Any] | None, source: str) -> Callable[[list[bytes]], bytes]:
    """The file's decoder: token strings (as UTF-8) → the text's bytes. Without one, Hugging Face joins the
    tokens with spaces."""
    if spec is None:
        return b" ".join
    steps = [_decode_step(part, source) for part in _parts(spec, "decoders")]

    def decode(pieces: list[bytes]) -> bytes:
        for step in steps:
            pieces = step(pieces)
        return b"".join(pieces)

    return decode


def _decode_step(spec: Any, source: str) -> DecodeStep:
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "Replace":
        old, new = (s.encode("utf-8") for s in _string_pattern(spec, source, "decoder"))
        return lambda pieces: [piece.replace(old, new) for piece in pieces]
    if kind == "ByteFallback":
        return lambda pieces: [_byte_of(piece) for piece in pieces]
    if kind == "Fuse":
        return lambda pieces: [b"".join(pieces)]
    if kind == "Strip" and isinstance(spec.get("content"), str) and len(spec["content"]) == 1:
        return _strip(spec["content"].encode("utf-8"), int(spec.get("start", 0)), int(spec.get("stop", 0)))
    if kind == "Metaspace" and isinstance(spec.get("replacement"), str):
        mark, drop_first = spec["replacement"].encode("utf-8"), _prepend_scheme(spec, source) != "never"
        return lambda pieces: [piece.replace(mark, b"" if i == 0 and drop_first else b" ")
                               for i, piece in enumerate(pieces)]
    raise _refuse(source, "decoder", spec)


def _byte_of(piece: bytes) -> bytes:
    """The byte a byte token such as `<0x0A>` stands for; any other token as it is."""
    if len(piece) == 6 and piece.startswith(b"<0x") and piece.endswith(b">"):
        try:
            return bytes([int(piece[3:5], 16)])
        except ValueError:
            return piece
    return piece


def _strip(content: bytes, start: int, stop: int) -> DecodeStep:
    """Strip: up to `start` copies of `content` off the front of each piece, `stop` off the back."""

    def strip(piece: bytes) -> bytes:
        for _ in range(start):
            if not piece.startswith(content):
                break
            piece = piece[len(content):]
        for _ in range(stop):
            if not piece.endswith(content):
                break
            piece = piece[:-len(content)]
        return piece

    return lambda pieces: [strip(piece) for piece in pieces]


def template_bos(spec: Mapping[str, Any] | None) -> str | None:
    """The special token a TemplateProcessing post-processor (alone or in a Sequence) puts before a single
    text, e.g. "<s>"; None when it puts none first."""
    for part in _parts(spec, "processors") if spec is not None else []:
        if isinstance(part, dict) and part.get("type") == "TemplateProcessing":
            first = (part.get("single") or [{}])[0]
            special = first.get("SpecialToken") if isinstance(first, dict) else None
            return special.get("id") if isinstance(special, dict) else None
    return None


def bos_template(token: str, token_id: int) -> dict[str, Any]:
    """A TemplateProcessing post-processor (tokenizer.json's JSON) that puts `token` before every text."""
    def first(text: str, type_id: int) -> list[dict[str, Any]]:
        return [{"SpecialToken": {"id": token, "type_id": type_id}}, {"Sequence": {"id": text, "type_id": type_id}}]

    return {"type": "TemplateProcessing", "single": first("A", 0), "pair": first("A", 0) + first("B", 1),
            "special_tokens": {token: {"id": token, "ids": [token_id], "tokens": [token]}}}


def llama_steps(add_space_prefix: bool) -> dict[str, Any]:
    """The normalizer, pre-tokenizer and decoder (tokenizer.json's JSON) that run a SentencePiece vocabulary
    as llama.cpp does: with `add_space_prefix`, a space before every span of text and one space taken off
    the front of the decoded text; byte tokens decoded to their bytes."""
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}
    steps = [{"type": "Prepend", "prepend": SPACE}, replace] if add_space_prefix else [replace]
    decoders = [{"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"},
                {"type": "Fuse"}]
    if add_space_prefix:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    return {"normalizer": {"type": "Sequence", "normalizers": steps}, "pre_tokenizer": None,
            "decoder": {"type": "Sequence", "decoders": decoders}}
