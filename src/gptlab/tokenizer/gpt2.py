"""GPT-2 byte-level BPE, run by tiktoken but built from the local encoder.json + vocab.bpe (no network)."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tiktoken

from gptlab.files import REGISTRY, fetch, sha256_of
from gptlab.models.gpt2 import GPT2_SPLIT
from gptlab.tokenizer.base import check_ids
from gptlab.tokenizer.chunks import safe_pieces

ENDOFTEXT = "<|endoftext|>"
EOS_ID = 50256
VOCAB_SIZE = 50257
N_BYTES = 256  # ids 0..255 are the single bytes; every merge after that adds one id


class GPT2Tokenizer:
    """The GPT-2 tokenizer (50,257 ids, <|endoftext|> = 50256) for pretrained GPT-2 weights."""

    name = "gpt2"
    vocab_size = VOCAB_SIZE
    eos_id: int | None = EOS_ID

    def __init__(self, encoder_path: str | Path | None = None, vocab_path: str | Path | None = None) -> None:
        encoder = (Path(encoder_path) if encoder_path is not None else fetch("gpt2-encoder")).resolve()
        vocab = (Path(vocab_path) if vocab_path is not None else fetch("gpt2-vocab")).resolve()
        self.files = (encoder, vocab)  # encoder.json, vocab.bpe
        self._encoding = _load_encoding(encoder, vocab)
        given = encoder_path is not None or vocab_path is not None
        standard = not given or (_is_standard(encoder, "gpt2-encoder") and _is_standard(vocab, "gpt2-vocab"))
        self._own_files = None if standard else (encoder, vocab)  # e.g. an OpenAI folder's edited copies

    def encode(self, text: str) -> list[int]:
        """Token ids for text of any length; a literal "<|endoftext|>" becomes the end-of-text id."""
        return [i for piece in safe_pieces(text) for i in self._encoding.encode(piece, allowed_special={ENDOFTEXT})]

    def decode(self, ids: Sequence[int]) -> str:
        """Text for token ids; bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """Raw bytes for token ids, which may end inside a multi-byte character."""
        check_ids(ids, VOCAB_SIZE, "GPT-2")
        return self._encoding.decode_bytes(list(ids))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description: the type says it all for GPT-2's published files; files that
        differ from them (a folder's own) are recorded by path, so a fine-tune rebuilds them."""
        if self._own_files is None:
            return {"type": "gpt2"}
        return {"type": "gpt2", "encoder": str(self._own_files[0]), "vocab": str(self._own_files[1])}

    def hf_files(self) -> dict[str, str]:
        """The two files a Hugging Face GPT-2 folder keeps its tokenizer in (name → text)."""
        encoder, vocab = self.files
        return {"vocab.json": encoder.read_text(encoding="utf-8"), "merges.txt": vocab.read_text(encoding="utf-8")}


def _is_standard(path: Path, name: str) -> bool:
    """Whether `path` holds the published file `name` of the registry (size first: cheap)."""
    return path.stat().st_size == REGISTRY[name].size and sha256_of(path) == REGISTRY[name].sha256


@functools.lru_cache(maxsize=4)
def _load_encoding(encoder_path: Path, vocab_path: Path) -> tiktoken.Encoding:
    """Build (once per process and file pair) the tiktoken encoding from GPT-2's own files."""
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_SPLIT.pattern,
        mergeable_ranks=load_mergeable_ranks(encoder_path, vocab_path),
        special_tokens={ENDOFTEXT: EOS_ID},
        explicit_n_vocab=VOCAB_SIZE,
    )


def load_mergeable_ranks(encoder_path: Path, vocab_path: Path) -> dict[bytes, int]:
    """Token bytes -> id from encoder.json, checked against the merge order in vocab.bpe."""
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    encoder = _read_encoder(encoder_path)
    ranks: dict[bytes, int] = {}
    for token, token_id in encoder.items():
        if token == ENDOFTEXT:
            continue
        ranks[_to_bytes(token, byte_of, f"{encoder_path}, token id {token_id}")] = token_id
    _check_merges(ranks, read_merges(vocab_path), byte_of, vocab_path)
    return ranks


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used to write tokens in its files."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in mapping]
    mapping.update({b: chr(256 + n) for n, b in enumerate(others)})
    return mapping


def _to_bytes(token: str, byte_of: dict[str, int], where: str) -> bytes:
    try:
        return bytes(byte_of[c] for c in token)
    except KeyError as exc:
        raise ValueError(
            f"{where}: token {token!r} contains {exc.args[0]!r}, which is not one of GPT-2's byte characters"
        ) from None


def _read_encoder(path: Path) -> dict[str, int]:
    try:
        encoder = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a GPT-2 encoder.json: not valid UTF-8 JSON ({exc})") from exc
    if not isinstance(encoder, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in encoder.items()
    ):
        raise ValueError(f"{path} is not a GPT-2 encoder.json: expected a JSON object of token -> integer id")
    if len(encoder) != VOCAB_SIZE or encoder.get(ENDOFTEXT) != EOS_ID:
        raise ValueError(
            f"{path} is not the GPT-2 encoder.json: expected {VOCAB_SIZE} tokens with {ENDOFTEXT} = {EOS_ID}, "
            f"found {len(encoder)} tokens with {ENDOFTEXT} = {encoder.get(ENDOFTEXT)}"
        )
    if sorted(encoder.values()) != list(range(VOCAB_SIZE)):
        raise ValueError(f"{path}: token ids must be exactly 0..{VOCAB_SIZE - 1}, each used once")
    return encoder


def read_merges(path: Path) -> list[tuple[str, str]]:
    try:
        lines = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a GPT-2 vocab.bpe: not valid UTF-8 ({exc})") from exc
    if not lines[0].startswith("#version"):
        raise ValueError(f"{path} is not a GPT-2 vocab.bpe: the first line should be '#version: 0.2'")
    merges = []
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{path}, line {number}: expected two tokens separated by one space, got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def _check_merges(
    ranks: dict[bytes, int], merges: list[tuple[str, str]], byte_of: dict[str, int], vocab_path: Path
) -> None:
    """tiktoken merges by id order, so merge i must produce token id 256 + i."""
    if len(merges) != len(ranks) - N_BYTES:
        raise ValueError(
            f"{vocab_path} has {len(merges)} merges but the encoder has {len(ranks)} tokens; "
            f"expected {len(ranks) - N_BYTES} (tokens minus {N_BYTES} single bytes). Are the two files a pair?"
        )
    for b in range(N_BYTES):
        if ranks.get(bytes([b]), N_BYTES) >= N_BYTES:
            raise ValueError(f"the encoder must give the single byte {b} an id below {N_BYTES}")
    for i, (left, right) in enumerate(merges):
        merged = _to_bytes(left + right, byte_of, f"{vocab_path}, line {i + 2}")
        if ranks.get(merged) != N_BYTES + i:
            raise ValueError(
                f"{vocab_path}, line {i + 2}: merging {left!r} + {right!r} should give token id {N_BYTES + i}, "
                f"but the encoder has {ranks.get(merged)}; the encoder and merges files do not match"
            )
