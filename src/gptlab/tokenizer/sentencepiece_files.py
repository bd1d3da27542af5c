"""SentencePiece-style BPE as model files store it: a Hugging Face `tokenizer.json` (Llama 2, Mistral, Phi-3,
Gemma: Prepend/Replace normalizers or a Metaspace pre-tokenizer, byte fallback) and a GGUF vocabulary
(`tokenizer.ggml.model = llama`: tokens, scores and token types, run as llama.cpp runs them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gptlab.tokenizer.hf_folder import begin_token, special_id, token_ids
from gptlab.tokenizer.hf_steps import bos_template, llama_steps
from gptlab.tokenizer.sentencepiece import SentencePieceBPE, SentencePieceVocabulary, score_merges

GGUF_UNKNOWN, GGUF_CONTROL, GGUF_USER_DEFINED, GGUF_BYTE = 2, 3, 4, 6  # token types (1: normal, 5: unused)
SPM_DEFAULTS = {"bos": 1, "eos": 2, "unknown": 0}  # llama.cpp's ids where a llama vocabulary names none


def is_sentencepiece(data: Mapping[str, Any]) -> bool:
    """Whether a tokenizer.json is the SentencePiece kind: byte fallback, a normalizer that writes spaces as "▁"
    (Prepend, Replace), or a Metaspace step; byte-level BPE has none of them (at most an NFC normalizer)."""
    model = data["model"] if isinstance(data.get("model"), dict) else {}
    steps = _step_types(data.get("pre_tokenizer")) | _step_types(data.get("decoder"))
    spaces = _step_types(data.get("normalizer")) & {"Prepend", "Replace"}
    return bool(model.get("byte_fallback")) or bool(spaces) or "Metaspace" in steps


def _step_types(spec: Any) -> set[Any]:
    """The types of a tokenizer.json step and of the steps inside it (Sequences opened)."""
    if not isinstance(spec, dict):
        return set()
    inner = [part for key in ("normalizers", "pretokenizers", "decoders") for part in spec.get(key) or []]
    return {spec.get("type")}.union(*map(_step_types, inner))


def hf_sentencepiece(path: Path, data: Mapping[str, Any], name: str | None = None) -> SentencePieceBPE:
    """A SentencePiece-style tokenizer.json, with the begin and end ids its folder names."""
    model = data["model"]
    for key in ("continuing_subword_prefix", "end_of_word_suffix", "dropout"):
        if model.get(key):
            raise ValueError(f"{path}: BPE {key} {model[key]!r} is not supported in a SentencePiece-style tokenizer")
    ids = token_ids(path, data)
    by_id = {i: token for token, i in ids.items()}
    bos_id, adds_bos = begin_token(path, data, ids)
    vocabulary = SentencePieceVocabulary(
        name=name or path.parent.name, source=str(path), tokens=[by_id[i] for i in range(len(by_id))],
        vocab=dict(model.get("vocab", {})),
        merges=[(*_merge_pair(merge, rank, path), rank) for rank, merge in enumerate(model.get("merges", []))],
        added=list(data.get("added_tokens") or []), unk=model.get("unk_token"),
        byte_fallback=bool(model.get("byte_fallback")), fuse_unk=bool(model.get("fuse_unk")),
        ignore_merges=bool(model.get("ignore_merges")),
        steps={key: data.get(key) for key in ("normalizer", "pre_tokenizer", "decoder", "post_processor")},
        eos_id=special_id(path.parent, ids, "eos"), bos_id=bos_id, adds_bos=adds_bos)
    return SentencePieceBPE(vocabulary, {"type": "hf", "path": str(path.resolve())})


def _merge_pair(merge: Any, number: int, path: Path) -> tuple[str, str]:
    """A merge as tokenizer.json writes it: "left right" (older files) or ["left", "right"]."""
    pair = merge.split(" ") if isinstance(merge, str) else merge
    if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)):
        raise ValueError(f"{path}: merge {number} {merge!r} is not two tokens (\"left right\" or [left, right])")
    return pair[0], pair[1]


def gguf_sentencepiece(path: Path, value: Callable[..., Any], description: Mapping[str, Any]) -> SentencePieceBPE:
    """A GGUF file's SentencePiece vocabulary (`value(key, default)` reads its metadata), as llama.cpp runs it:
    merged by score, byte tokens for characters it lacks, unknown/control/user-defined tokens found whole
    in the text, and with `add_space_prefix` a space before every span of text between them."""
    tokens, scores = list(value("tokenizer.ggml.tokens", [])), value("tokenizer.ggml.scores")
    types = list(value("tokenizer.ggml.token_type") or [1] * len(tokens))
    if not tokens or scores is None or len(scores) != len(tokens) or len(types) != len(tokens):
        raise ValueError(f"{path}: a llama (SentencePiece) vocabulary needs tokenizer.ggml.tokens, and "
                         "tokenizer.ggml.scores and token_type with one entry per token (it merges by score)")

    def token_id(role: str) -> int | None:
        found = value(f"tokenizer.ggml.{role}_token_id", SPM_DEFAULTS[role])
        return int(found) if found is not None and 0 <= int(found) < len(tokens) else None

    bos_id, unk_id = token_id("bos"), token_id("unknown")
    adds_bos = bool(value("tokenizer.ggml.add_bos_token", True)) and bos_id is not None
    steps = llama_steps(bool(value("tokenizer.ggml.add_space_prefix", True)))
    steps["post_processor"] = bos_template(tokens[bos_id], bos_id) if adds_bos and bos_id is not None else None
    added = [{"id": i, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": kind != GGUF_USER_DEFINED}
             for i, (token, kind) in enumerate(zip(tokens, types))
             if kind in (GGUF_UNKNOWN, GGUF_CONTROL, GGUF_USER_DEFINED) and token]
    vocabulary = SentencePieceVocabulary(
        name=str(value("general.name", path.stem)), source=str(path), tokens=tokens,
        vocab={token: i for i, token in enumerate(tokens)},
        merges=score_merges(tokens, scores, [kind != GGUF_BYTE for kind in types]), added=added,
        unk=None if unk_id is None else tokens[unk_id], byte_fallback=True, fuse_unk=True, ignore_merges=False,
        steps=steps, eos_id=token_id("eos"), bos_id=bos_id, adds_bos=adds_bos)
    return SentencePieceBPE(vocabulary, dict(description))
