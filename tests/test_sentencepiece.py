"""SentencePiece-style BPE (Llama 2, Mistral, Phi-3, Gemma) read from tokenizer.json and GGUF files: ids equal
Hugging Face `tokenizers`' (and transformers' GGUF reading) on the mirror's texts and a Unicode torture text."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from gptlab.files import fetch
from gptlab.tokenizer import SentencePieceBPE, gguf_tokenizer, hf_files, hf_tokenizer, tokenizer_from_dict
from hf_models import tokenizer_texts
from sentencepiece_vocab import KINDS, save_kind, save_llama_gguf, trained_vocabulary

TORTURE = [
    "Ça coûte 5 € — naïve café, Ångström, 東京タワー, 한국어, Ελληνικά",
    "emoji 😀👍🏽 👨‍👩‍👧 🇫🇷, e\u0301 a\u0308 (combining marks)",
    "  two leading spaces", " one", "trailing   ", " ", "\n", "", "\t\ttabs\tand\n\n\nnewlines  and   runs  \r\n",
    "\u00a0no-break\u2009thin\u3000ideographic space", "▁already▁marked ▁", "<0x41> is text, not a byte",
    "<s>inside</s> a text <|user|>  \n hi<|end|>  x", "a<s>b", "<unk><unk>", "x  <|end|>", "😀" * 5,
]
LOSSLESS = {"llama2", "gemma"}  # kinds whose decode gives back a text (with byte fallback; not "▁", added tokens)


@pytest.fixture(scope="module")
def verdict() -> str:
    return fetch("the-verdict").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [*tokenizer_texts(), *TORTURE]


@pytest.fixture(scope="module")
def vocabularies(verdict) -> dict[str, dict]:
    return {"bytes": trained_vocabulary(verdict), "unk": trained_vocabulary(verdict, byte_fallback=False),
            "unk-unfused": trained_vocabulary(verdict, byte_fallback=False, fuse_unk=False),
            "spanning": trained_vocabulary(verdict, words=False)}  # tokens that run across spaces


def assert_like_hf(path: Path, texts: list[str], lossless: bool) -> SentencePieceBPE:
    ours, theirs = hf_tokenizer(path), Tokenizer.from_file(str(path))
    assert isinstance(ours, SentencePieceBPE)
    for text in texts:
        ids = ours.encode(text)
        assert ids == theirs.encode(text, add_special_tokens=False).ids, text[:60]
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=False), text[:60]
        if lossless and "▁" not in text and not any(token in text for token in ours.special_tokens):
            assert ours.decode(ids) == text, text[:60]
    return ours


@pytest.mark.parametrize("kind, vocabulary", [*((kind, "bytes") for kind in KINDS),
                                               ("llama2", "unk"), ("llama2", "unk-unfused"), ("llama2", "spanning"),
                                               ("metaspace-always", "unk"), ("metaspace-always", "unk-unfused"),
                                               ("gemma", "spanning")])
def test_ids_and_text_equal_hf_tokenizers(tmp_path, vocabularies, texts, kind, vocabulary):
    path = save_kind(vocabularies[vocabulary], kind, tmp_path)
    assert_like_hf(path, texts, lossless=kind in LOSSLESS and vocabulary in ("bytes", "spanning"))


@pytest.mark.parametrize("kind", ["llama2", "metaspace-first"])
def test_older_files_and_rarer_added_tokens(tmp_path, vocabularies, kind):
    """Merges as "a b" strings, `ignore_merges`, an added token matched after normalization, a single-word one."""
    data = json.loads(json.dumps(vocabularies["bytes"]))
    data["model"]["merges"] = [" ".join(merge) for merge in data["model"]["merges"]]
    data["model"]["ignore_merges"] = True
    flags = {"lstrip": False, "rstrip": False, "special": False}
    data["added_tokens"] += [{"id": 1002, "content": "<n> x", "single_word": False, "normalized": True, **flags},
                             {"id": 1003, "content": "<w>", "single_word": True, "normalized": False, **flags}]
    texts = ["a <n> x b <n> xing", "<n> x", " <n> x", "so <w> a<w>b <w>", "I had always thought"]
    assert_like_hf(save_kind(data, kind, tmp_path), texts, lossless=False)


def test_begin_end_and_specials_and_the_recorded_description(tmp_path, vocabularies):
    tokenizer = hf_tokenizer(save_kind(vocabularies["bytes"], "llama2", tmp_path))
    assert (tokenizer.bos_id, tokenizer.adds_bos, tokenizer.eos_id, tokenizer.vocab_size) == (1, True, 2, 1002)
    assert tokenizer.encode("<s>") == [1] and tokenizer.encode("hi</s>")[-1] == 2
    assert tokenizer.encode("<|user|>\n  Hi")[:2] == [1000, tokenizer.encode("Hi")[0]]  # rstrip took "\n  "
    assert tokenizer.to_dict() == {"type": "hf", "path": str((tmp_path / "tokenizer.json").resolve())}
    again = tokenizer_from_dict(json.loads(json.dumps(tokenizer.to_dict())))
    assert again.encode(TORTURE[0]) == tokenizer.encode(TORTURE[0])
    with pytest.raises(ValueError, match="token id 1002 is outside the .* vocabulary 0..1001"):
        tokenizer.decode([5, 1002])


def test_long_texts_cost_little(tmp_path, vocabularies, verdict):
    """Without a pre-tokenizer a whole text is one word: cut where no token spans and merged with a heap."""
    path = save_kind(vocabularies["bytes"], "llama2", tmp_path)
    ours, theirs = hf_tokenizer(path), Tokenizer.from_file(str(path))
    for text in (verdict * 2, " " * 50_000 + "x", "東京" * 10_000, "ab" * 20_000):
        start = time.perf_counter()
        ids = ours.encode(text)
        assert time.perf_counter() - start < 5  # a quadratic merge takes minutes here
        assert ids == theirs.encode(text, add_special_tokens=False).ids


def test_gguf_llama_vocabulary_equals_transformers(tmp_path, vocabularies, texts):
    """transformers runs a phi3 GGUF's SentencePiece vocabulary as llama.cpp does (a space before every span
    of text, merges by score); its llama files get Metaspace "first" instead."""
    from transformers import AutoTokenizer

    data = vocabularies["bytes"]
    path = save_llama_gguf(data, tmp_path / "phi3.gguf", architecture="phi3")
    ours = gguf_tokenizer({"type": "gguf", "path": str(path)})
    theirs = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    assert isinstance(ours, SentencePieceBPE)
    assert (ours.bos_id, ours.adds_bos, ours.eos_id, ours.vocab_size, ours.name) == (1, True, 2, 1002,
                                                                                    "tiny-sentencepiece")
    for text in texts:
        ids = ours.encode(text)
        assert ids == theirs.encode(text, add_special_tokens=False), text[:60]
        assert ours.decode(ids) == theirs.decode(ids), text[:60]
    hf_kind = hf_tokenizer(save_kind(data, "llama2", tmp_path / "hf"))  # the same vocabulary by merges
    assert all(ours.encode(text) == hf_kind.encode(text) for text in texts if "<|" not in text)
    assert tokenizer_from_dict(ours.to_dict()).encode(TORTURE[0]) == ours.encode(TORTURE[0])


@pytest.mark.parametrize("source", ["hf", "gguf"])
def test_export_writes_files_transformers_and_gptlab_read_back(tmp_path, vocabularies, texts, source):
    from transformers import AutoTokenizer

    data = vocabularies["bytes"]
    ours = (hf_tokenizer(save_kind(data, "metaspace-first", tmp_path / "in")) if source == "hf" else
            gguf_tokenizer({"type": "gguf", "path": str(save_llama_gguf(data, tmp_path / "in.gguf"))}))
    folder = tmp_path / "out"
    folder.mkdir()
    for name, text in hf_files(ours).items():
        (folder / name).write_text(text, encoding="utf-8")
    theirs, again = AutoTokenizer.from_pretrained(folder), hf_tokenizer(folder / "tokenizer.json")
    assert (theirs.bos_token, theirs.eos_token) == ("<s>", "</s>")
    assert (again.bos_id, again.adds_bos, again.eos_id) == (1, True, 2)
    for text in texts[:50] + TORTURE:
        assert theirs.encode(text) == [1, *ours.encode(text)] == [1, *again.encode(text)], text[:60]


def tokenizer_json(model: dict, **steps) -> dict:
    return {"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": None, "post_processor": None,
            "decoder": None, "model": model, **steps}


BPE = {"type": "BPE", "vocab": {"<unk>": 0, "a": 1}, "merges": [], "byte_fallback": True, "unk_token": "<unk>"}


@pytest.mark.parametrize("data, message", [
    (tokenizer_json({"type": "WordPiece", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"}),
     "tokenizer model 'WordPiece' is not supported; gptlab reads byte-level BPE .* and SentencePiece-style BPE"),
    (tokenizer_json({"type": "Unigram", "vocab": [["<unk>", 0.0]], "unk_id": 0}),
     "tokenizer model 'Unigram' is not supported; gptlab reads byte-level BPE"),
    (tokenizer_json(BPE, normalizer={"type": "NFKC"}),
     'normalizer {"type": "NFKC"} is not supported; gptlab reads byte-level BPE .NFC or no normalizer. and '
     "SentencePiece-style BPE with normalizers Prepend"),
    (tokenizer_json(BPE, decoder={"type": "ByteLevel"}), 'decoder {"type": "ByteLevel"} is not supported'),
    (tokenizer_json(BPE, pre_tokenizer={"type": "Sequence",
                                        "pretokenizers": [{"type": "Digits"}, {"type": "Metaspace"}]}),
     "pre-tokenizer .*Digits.* is not supported"),
    (tokenizer_json({**BPE, "merges": [["a", "b"]]}), "merge 0 .'a' 'b'. joins or makes a token the vocabulary lacks"),
    (tokenizer_json({**BPE, "merges": ["a"]}), "merge 0 'a' is not two tokens"),
])
def test_tokenizers_gptlab_cannot_run_are_refused_in_one_line(tmp_path, data, message):
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"^{path}: {message}") as err:
        hf_tokenizer(path)
    assert "\n" not in str(err.value)
