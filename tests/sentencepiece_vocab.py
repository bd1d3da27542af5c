"""SentencePiece-style BPE vocabularies trained here with Hugging Face `tokenizers` (no downloads): a small
BPE on The Verdict with byte fallback, saved as a `tokenizer.json` of each kind real models ship, and
written into GGUF files as llama.cpp writes a "llama" vocabulary (scores instead of merges)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, models, processors, trainers
from tokenizers import decoders as dec
from tokenizers import normalizers as norm
from tokenizers import pre_tokenizers as pre

SPACE = "▁"
BYTES = [f"<0x{b:02X}>" for b in range(256)]
SPECIALS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2 as in Llama 2; the 256 byte tokens follow
ADDED = [AddedToken("<|user|>", rstrip=True, normalized=False),  # Phi-3's chat tokens take the white space after
         AddedToken("<|end|>", lstrip=True, normalized=False)]
LLAMA_DECODER = dec.Sequence([dec.Replace(SPACE, " "), dec.ByteFallback(), dec.Fuse(), dec.Strip(" ", 1, 0)])
KINDS = {  # (normalizer, pre-tokenizer, decoder) of each kind
    "llama2": (norm.Sequence([norm.Prepend(SPACE), norm.Replace(" ", SPACE)]), None, LLAMA_DECODER),
    "metaspace-first": (None, pre.Metaspace(SPACE, "first", split=False), LLAMA_DECODER),  # transformers' Llama now
    "metaspace-always": (None, pre.Metaspace(SPACE, "always", split=True), dec.Metaspace(SPACE, "always")),
    "metaspace-never": (None, pre.Metaspace(SPACE, "never", split=True), dec.Metaspace(SPACE, "never")),
    "gemma": (norm.Replace(" ", SPACE), None, dec.Sequence([dec.Replace(SPACE, " "), dec.ByteFallback(), dec.Fuse()])),
}
GGUF_TYPES = {"<unk>": 2, "<s>": 3, "</s>": 3, "<|user|>": 3, "<|end|>": 3}  # unknown, control; bytes are 6


def trained_vocabulary(text: str, byte_fallback: bool = True, fuse_unk: bool = True,
                       words: bool = True) -> dict[str, Any]:
    """A 1,000-token BPE trained on `text` as tokenizer.json data, with Llama 2's specials, byte tokens in the
    model's vocabulary (not added tokens, so "<0x41>" in a text is just text) and two Phi-3-like added
    tokens. `words`: trained on Metaspace words (SentencePiece's pieces); else on whole lines, so that
    tokens run across spaces."""
    tokenizer = Tokenizer(models.BPE(byte_fallback=byte_fallback, unk_token="<unk>", fuse_unk=fuse_unk))
    if words:
        tokenizer.pre_tokenizer = pre.Metaspace(SPACE, "always", split=True)
    else:
        tokenizer.normalizer = norm.Replace(" ", SPACE)
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=[*SPECIALS, *BYTES], show_progress=False)
    tokenizer.train_from_iterator(text.splitlines(), trainer)
    tokenizer.add_special_tokens(ADDED)
    data = json.loads(tokenizer.to_str())
    data["added_tokens"] = [token for token in data["added_tokens"] if token["content"] not in BYTES]
    return data


def save_kind(data: dict[str, Any], kind: str, folder: Path) -> Path:
    """`data` as a tokenizer.json of `kind` that puts <s> first, beside a tokenizer_config.json naming </s>."""
    tokenizer = Tokenizer.from_str(json.dumps(data))
    tokenizer.normalizer, tokenizer.pre_tokenizer, tokenizer.decoder = KINDS[kind]
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    return folder / "tokenizer.json"


def save_llama_gguf(data: dict[str, Any], path: Path, architecture: str = "llama") -> Path:
    """The vocabulary of `data` as a GGUF "llama" vocabulary (a tiny tensor makes it a valid file): scores
    minus the rank of the merge that makes each token, token types, BOS added, a space prefix."""
    import gguf
    import numpy as np

    ids = {**data["model"]["vocab"], **{token["content"]: token["id"] for token in data["added_tokens"]}}
    tokens = sorted(ids, key=ids.__getitem__)
    rank = {left + right: n for n, (left, right) in enumerate(data["model"]["merges"])}
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny-sentencepiece")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([-1.0 - rank[token] if token in rank else 0.0 for token in tokens])
    writer.add_token_types([6 if token in BYTES else GGUF_TYPES.get(token, 1) for token in tokens])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(True)
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
