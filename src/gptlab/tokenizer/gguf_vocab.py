"""A tokenizer as llama.cpp keeps it in a GGUF file (`tokenizer.ggml.*`), for export.

llama.cpp runs a byte-level BPE vocabulary ("gpt2") with the cut before BPE that `tokenizer.ggml.pre`
names; it knows cuts by name only, so a vocabulary whose cut has no llama.cpp name would tokenize
differently there and produce garbage: it is refused, as is a tokenizer llama.cpp has no kind for
(gptlab's char tokenizer). Every family's cut (`gptlab.models`) is named as llama.cpp names it.

A SentencePiece-style vocabulary (Llama 2, Mistral, Phi-3, Gemma) goes as llama.cpp's "llama" kind, which
lists scores instead of merges and merges the pair whose token scores highest: each token scores minus
(1 + the rank of the first merge that makes it), so merges happen in the order the file's ranks give. The
inverse of `sentencepiece_files.gguf_sentencepiece`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gptlab.models import PRE_TOKENIZERS
from gptlab.tokenizer.base import Tokenizer
from gptlab.tokenizer.bytelevel import ByteLevelBPE
from gptlab.tokenizer.gpt2 import ENDOFTEXT, GPT2Tokenizer, read_merges
from gptlab.tokenizer.hf_steps import SPACE, metaspace
from gptlab.tokenizer.scratch import BPETokenizer
from gptlab.tokenizer.sentencepiece import SentencePieceBPE, SentencePieceVocabulary
from gptlab.tokenizer.sentencepiece_files import GGUF_BYTE, GGUF_CONTROL, GGUF_UNKNOWN, GGUF_USER_DEFINED

GGUF_NORMAL = 1  # tokenizer.ggml.token_type of a token made by merges
BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")  # a SentencePiece byte-fallback token
# the normalizers (tokenizer.json) llama.cpp runs as a "llama" vocabulary, by whether they put a space first
PREPEND = {"type": "Prepend", "prepend": SPACE}
REPLACE = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}


@dataclass(frozen=True)
class GGUFVocabulary:
    """A byte-level BPE vocabulary in llama.cpp's form."""

    pre: str | None  # tokenizer.ggml.pre: llama.cpp's name for the cut before BPE (None: a "llama" vocabulary)
    tokens: list[str]  # token text by id, in GPT-2's byte-to-character alphabet ("▁" for spaces in "llama")
    token_types: list[int]  # GGUF_NORMAL, GGUF_CONTROL for tokens matched whole in text, ("llama") byte, ...
    merges: list[str]  # "left right", in merge order (empty for "llama": its scores say)
    bos_id: int | None  # the id that begins a document
    eos_id: int | None  # the id that ends one
    adds_bos: bool  # whether every text starts with bos_id
    model: str = "gpt2"  # tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece-style)
    scores: list[float] = field(default_factory=list)  # "llama": each token's score, higher merges sooner
    unknown_id: int | None = None  # "llama": the token of a character with no token and no byte tokens
    adds_space_prefix: bool = False  # "llama": a space goes before the text (Llama 2, Phi-3; not Gemma)


def gguf_vocabulary(tokenizer: Tokenizer) -> GGUFVocabulary:
    """`tokenizer` as llama.cpp reads it; one line naming the reason where llama.cpp cannot run it as gptlab does."""
    if isinstance(tokenizer, GPT2Tokenizer):
        return _gpt2(tokenizer)
    if isinstance(tokenizer, ByteLevelBPE):
        vocab = tokenizer.vocabulary
        return GGUFVocabulary(tokenizer.pre_tokenizer.name, vocab.tokens, _types(len(vocab.tokens), vocab.special_ids),
                              vocab.merges, vocab.bos_id, vocab.eos_id, vocab.adds_bos)
    if isinstance(tokenizer, BPETokenizer):
        return _trained(tokenizer)
    if isinstance(tokenizer, SentencePieceBPE):
        return _sentencepiece(tokenizer.vocabulary)
    raise ValueError(f"the {tokenizer.name} tokenizer has no form llama.cpp runs (it runs byte-level BPE and "
                     "SentencePiece vocabularies); train a BPE tokenizer (gptlab tokenizer train) for a model "
                     "to export")


def _gpt2(tokenizer: GPT2Tokenizer) -> GGUFVocabulary:
    """GPT-2's published files (or a folder's own copies) as llama.cpp's converter writes them."""
    import json

    encoder_path, merges_path = tokenizer.files
    encoder = json.loads(encoder_path.read_text(encoding="utf-8"))
    tokens = [token for token, _ in sorted(encoder.items(), key=lambda item: item[1])]
    special = [encoder[ENDOFTEXT]]
    merges = [f"{left} {right}" for left, right in read_merges(merges_path)]
    return GGUFVocabulary("gpt-2", tokens, _types(len(tokens), special), merges, special[0], special[0], False)


def _trained(tokenizer: BPETokenizer) -> GGUFVocabulary:
    """A vocabulary trained here, if its regex is a cut llama.cpp knows by name."""
    vocab = tokenizer.vocabulary
    cut = next((cut for cut in PRE_TOKENIZERS if cut.pattern == vocab.pattern), None)
    if cut is None:
        known = ", ".join(cut.name for cut in PRE_TOKENIZERS)
        raise ValueError(f"the {tokenizer.name} tokenizer cuts text with its own regex, which llama.cpp has no name "
                         f"for (it knows {known}); train it with --pattern gpt2 to export the model to GGUF")
    recorded = vocab.to_dict()
    return GGUFVocabulary(cut.name, recorded["vocab"], _types(vocab.size, list(vocab.special_ids.values())),
                          recorded["merges"], None, vocab.eos_id, False)


def _sentencepiece(v: SentencePieceVocabulary) -> GGUFVocabulary:
    """A SentencePiece-style vocabulary as llama.cpp's "llama" kind: scores from the merges' ranks, token types."""
    first: dict[str, float] = {}  # each token made by a merge → the rank of the first merge that makes it
    for left, right, rank in v.merges:
        first[left + right] = min(rank, first.get(left + right, rank))
    added = {token["id"]: token for token in v.added}
    unknown_id = None if v.unk is None else v.vocab[v.unk]
    types = []
    for i, token in enumerate(v.tokens):
        if v.byte_fallback and BYTE_TOKEN.fullmatch(token):
            types.append(GGUF_BYTE)
        elif i == unknown_id:
            types.append(GGUF_UNKNOWN)
        elif i in added:
            types.append(GGUF_CONTROL if added[i].get("special", True) else GGUF_USER_DEFINED)
        else:
            types.append(GGUF_NORMAL)
    scores = [-1.0 - first[token] if token in first else 0.0 for token in v.tokens]
    return GGUFVocabulary(None, list(v.tokens), types, [], v.bos_id, v.eos_id, v.adds_bos, "llama", scores,
                          unknown_id, _space_prefix(v))


def _space_prefix(v: SentencePieceVocabulary) -> bool:
    """Whether the text gets a space before it (`add_space_prefix`, llama.cpp's one setting for the steps around
    a "llama" vocabulary): a Prepend normalizer or a Metaspace that prepends; other steps are refused."""
    normalizer, pre_tokenizer = v.steps.get("normalizer"), v.steps.get("pre_tokenizer")
    steps = [] if normalizer is None else normalizer.get("normalizers", []) if normalizer.get("type") == "Sequence" \
        else [normalizer]
    if pre_tokenizer is None and steps in ([PREPEND, REPLACE], [REPLACE]):
        return steps[0] == PREPEND
    space = metaspace(pre_tokenizer, v.source) if not steps else None
    if space is None or space.replacement != SPACE:
        raise ValueError(f"the {v.name} tokenizer prepares text with steps llama.cpp has no setting for (it writes "
                         f"spaces as {SPACE!r}, with or without one before the text); it has no GGUF form")
    return space.prepend != "never"


def _types(count: int, special_ids: list[int]) -> list[int]:
    special = set(special_ids)
    return [GGUF_CONTROL if i in special else GGUF_NORMAL for i in range(count)]
