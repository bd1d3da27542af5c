"""What a Hugging Face folder says about its tokenizer, whatever its kind: the ids its `tokenizer.json`
gives, and its begin and end tokens (the post-processor, tokenizer_config.json, config.json)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gptlab.files import read_json
from gptlab.tokenizer.hf_steps import template_bos


def token_ids(path: Path, data: Mapping[str, Any]) -> dict[str, int]:
    """Every token of a tokenizer.json (its model's vocabulary and its added tokens) → id, checked to be
    the ids 0..n-1, each once."""
    model = data["model"] if isinstance(data.get("model"), dict) else {}
    added = data.get("added_tokens") or []
    ids = {**model.get("vocab", {}), **{token["content"]: token["id"] for token in added}}
    if set(ids.values()) != set(range(len(ids))):
        raise ValueError(f"{path}: token ids must be 0..{len(ids) - 1}, each used once")
    return ids


def special_id(folder: Path, ids: Mapping[str, int], role: str) -> int | None:
    """The id of the folder's `role` token ("bos", "eos"): `{role}_token` of tokenizer_config.json, else
    `{role}_token_id` of config.json (the first, where it lists several)."""
    if (folder / "tokenizer_config.json").is_file():
        token = read_json(folder / "tokenizer_config.json").get(f"{role}_token")
        token = token.get("content") if isinstance(token, dict) else token
        if isinstance(token, str) and token in ids:
            return ids[token]
    found = read_json(folder / "config.json").get(f"{role}_token_id") if (folder / "config.json").is_file() else None
    found = found[0] if isinstance(found, list) and found else found
    # an id the tokenizer lacks (a config.json left at its class's default) names no token of this tokenizer
    return found if isinstance(found, int) and not isinstance(found, bool) and 0 <= found < len(ids) else None


def begin_token(path: Path, data: Mapping[str, Any], ids: Mapping[str, int]) -> tuple[int | None, bool]:
    """(bos id, whether the tokenizer puts it before every text): the token the post-processor puts first,
    else the folder's bos token, which the post-processor then leaves out."""
    first = template_bos(data.get("post_processor"))
    if first is None:
        return special_id(path.parent, ids, "bos"), False
    if first not in ids:
        raise ValueError(f"{path}: the post-processor puts {first!r} first, a token the vocabulary lacks")
    return ids[first], True
