"""A tokenizer as llama.cpp keeps it in a GGUF file (`tokenizer.ggml.*`), for export.

llama.cpp runs a byte-level BPE vocabulary ("gpt2") with the cut before BPE that `tokenizer.ggml.pre`
names; it knows cuts by name only, so a vocabulary whose cut has no llama.cpp name would tokenize
differently there and produce garbage: it is refused, as is a tokenizer llama.cpp has no kind for
(gptlab's char tokenizer). Every family's cut (`gptlab.models`) is named as llama.cpp names it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gptlab.models import PRE_TOKENIZERS
from gptlab.tokenizer.base import Tokenizer
from gptlab.tokenizer.bytelevel import ByteLevelBPE
from gptlab.tokenizer.gpt2 import ENDOFTEXT, GPT2Tokenizer, read_merges
from gptlab.tokenizer.scratch import BPETokenizer
from gptlab.tokenizer.sentencepiece import SentencePieceBPE
from gptlab.tokenizer.sentencepiece_files import GGUF_CONTROL

GGUF_NORMAL = 1  # tokenizer.ggml.token_type of a token made by merges


@dataclass(frozen=True)
class GGUFVocabulary:
    """A byte-level BPE vocabulary in llama.cpp's form."""

    pre: str  # tokenizer.ggml.pre: llama.cpp's name for the cut before BPE
    tokens: list[str]  # token text by id, in GPT-2's byte-to-character alphabet
    token_types: list[int]  # GGUF_NORMAL, or GGUF_CONTROL for tokens matched whole in text
    merges: list[str]  # "left right", in merge order
    bos_id: int | None  # the id that begins a document
    eos_id: int | None  # the id that ends one
    adds_bos: bool  # whether every text starts with bos_id


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
        raise ValueError(f"the {tokenizer.name} tokenizer is SentencePiece-style BPE (Llama 2, Mistral, Phi-3, Gemma), "
                         "which gptlab does not write to GGUF yet; it writes byte-level BPE vocabularies")
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


def _types(count: int, special_ids: list[int]) -> list[int]:
    special = set(special_ids)
    return [GGUF_CONTROL if i in special else GGUF_NORMAL for i in range(count)]
