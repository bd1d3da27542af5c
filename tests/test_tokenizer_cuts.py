"""The byte-level tokenizers of the models people bring: Llama 3, Qwen2/2.5/3, OLMo 2 and Pythia cut text
before BPE in their own ways (and Qwen and Pythia compose it to NFC first). SmolLM2's vocabulary with each
real cut swapped into its tokenizer.json gives Hugging Face `tokenizers`' ids, read from tokenizer.json and
from a GGUF vocabulary that names the cut as llama.cpp does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from gguf_files import small_vocabulary, write_gguf
from gptlab.models import gpt2, gpt_neox, llama, olmo2, pre_tokenizer, qwen2
from gptlab.tokenizer import gguf_tokenizer, hf_tokenizer
from hf_models import tokenizer_texts

TORTURE = ("12345678 1,234,567.89 \u0661\u0662\u0663\u0664 DON'T I'LL we'Re you'D 'ſ ſt "  # digit runs, contractions
           "東京タワーは333m 你好，世界！ 한국어 🚀😶\u200d🌫️👩🏽\u200d💻 "  # CJK, emoji (ZWJ, skin tone)
           "e\u0301 cafe\u0301 A\u030a a\u0323\u0302 \u212a \u212b \u0344 "  # NFC composes, reorders, swaps singletons
           "x  \t  y\u00a0z\u3000w \r\n\r\n  \n\n\n end   \t"  # whitespace runs, \r\n
           "<|im_start|>user<|im_end|>\u0338 e<|endoftext|>\u0301")  # added tokens with a mark after them
LLAMA3_POST = {"type": "Sequence", "processors": [  # Llama 3's post-processor: offsets, then its BOS before a text
    {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
    {"type": "TemplateProcessing",
     "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
     "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
              {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
     "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [49152],
                                              "tokens": ["<|begin_of_text|>"]}}}]}
# Llama 3's and OLMo 2's split, as their tokenizer.json files spell it (Qwen's has \p{N} for \p{N}{1,3})
CL100K = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
          r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")


def split_then_bytes(regex: str, trim_offsets: bool = True) -> dict:
    """A pre-tokenizer as Llama 3's, Qwen's and OLMo 2's tokenizer.json write it."""
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": trim_offsets, "use_regex": False}]}


# Each model's tokenizer.json steps as published: its pre-tokenizer (Qwen's ByteLevel keeps offsets, Pythia's
# predates `use_regex`), its normalizer, and the name llama.cpp's GGUF files give the cut.
KINDS = {
    "llama3": (split_then_bytes(CL100K), None, "llama-bpe"),
    "qwen2": (split_then_bytes(CL100K.replace(r"\p{N}{1,3}", r"\p{N}"), trim_offsets=False), {"type": "NFC"}, "qwen2"),
    "olmo2": (split_then_bytes(CL100K), None, "dbrx"),
    "pythia": ({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}, {"type": "NFC"}, "olmo"),
}


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [*tokenizer_texts(), TORTURE]


def swap_steps(source: Path, path: Path, kind: str, **changes) -> Path:
    """SmolLM2's tokenizer.json with the pre-tokenizer and normalizer of `kind`, and any other `changes`."""
    data = json.loads(source.read_text(encoding="utf-8"))
    cut, normalizer, _ = KINDS[kind]
    path.write_text(json.dumps({**data, "pre_tokenizer": cut, "normalizer": normalizer, **changes}),
                    encoding="utf-8")
    return path


def hf_ids(reference: Tokenizer, text: str) -> list[int]:
    return reference.encode(text, add_special_tokens=False).ids


def test_each_cut_is_found_by_its_gguf_name_and_its_tokenizer_json_spec():
    for kind, cut in (("llama3", llama.LLAMA3_SPLIT), ("qwen2", qwen2.QWEN2_SPLIT), ("olmo2", olmo2.OLMO2_SPLIT),
                      ("pythia", gpt_neox.NEOX_SPLIT)):
        spec, _, name = KINDS[kind]
        assert pre_tokenizer(name, "m.gguf") is cut
        assert pre_tokenizer(spec, "tokenizer.json").pattern == cut.pattern
    # one cut under two GGUF names: a tokenizer.json finds the first family's
    assert pre_tokenizer(KINDS["olmo2"][0], "tokenizer.json") is llama.LLAMA3_SPLIT
    assert pre_tokenizer(KINDS["pythia"][0], "tokenizer.json") is gpt2.GPT2_SPLIT


@pytest.mark.parametrize("kind", KINDS)
def test_ids_equal_hf_tokenizers_and_export_keeps_the_steps(tmp_path, hf_smollm2, texts, kind):
    path = swap_steps(hf_smollm2 / "tokenizer.json", tmp_path / "tokenizer.json", kind)
    ours, reference = hf_tokenizer(path), Tokenizer.from_file(str(path))
    nfc = KINDS[kind][1] is not None
    assert ours.vocabulary.nfc == nfc
    for text in texts:
        ids = ours.encode(text)
        assert ids == hf_ids(reference, text), text[:60]
        # lossless up to NFC, which composes the text between added tokens (never across one), as HF's does
        assert ours.decode(ids) == (reference.decode(ids, skip_special_tokens=False) if nfc else text), text[:60]
    assert ours.decode(ours.encode("cafe\u0301")) == ("caf\u00e9" if nfc else "cafe\u0301")
    exported = Tokenizer.from_str(ours.hf_files()["tokenizer.json"])
    assert hf_ids(exported, TORTURE) == hf_ids(reference, TORTURE)


def every_spelling(model: dict) -> list[list[str]]:
    """Merges as transformers converts a tiktoken vocabulary (Llama 3's: 280,147 for 128,000 tokens): every pair of
    tokens that spells a token, by that token's id, then by the pair's ids."""
    vocab, merges = model["vocab"], []
    for token in sorted(vocab, key=vocab.__getitem__):
        pairs = [[token[:cut], token[cut:]] for cut in range(1, len(token))]
        merges += sorted((pair for pair in pairs if pair[0] in vocab and pair[1] in vocab),
                         key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
    return merges


def test_llama3_kind_every_spelling_merged_and_its_begin_token_from_the_post_processor(tmp_path, hf_smollm2, texts):
    data = json.loads((hf_smollm2 / "tokenizer.json").read_text(encoding="utf-8"))
    begin = {"id": 49152, "content": "<|begin_of_text|>", "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
    model = {**data["model"], "merges": every_spelling(data["model"])}
    path = swap_steps(hf_smollm2 / "tokenizer.json", tmp_path / "tokenizer.json", "llama3", model=model,
                      added_tokens=[*data["added_tokens"], begin], post_processor=LLAMA3_POST)
    ours, reference = hf_tokenizer(path), Tokenizer.from_file(str(path))
    assert len(ours.vocabulary.merges) > 2 * len(data["model"]["merges"])
    assert (ours.pre_tokenizer, ours.bos_id, ours.adds_bos, ours.vocab_size) == (llama.LLAMA3_SPLIT, 49152, True, 49153)
    for text in [*texts[:50], TORTURE, "<|begin_of_text|>hi"]:
        assert reference.encode(text).ids == [49152, *ours.encode(text)], text[:60]


@pytest.mark.parametrize("kind", KINDS)
def test_a_gguf_vocabulary_naming_the_cut_gives_the_same_ids(tmp_path, hf_smollm2, texts, kind):
    # llama.cpp keeps no normalizer: its GGUF runs the cut on the text as it comes, so the reference has none
    swapped = swap_steps(hf_smollm2 / "tokenizer.json", tmp_path / "full.json", kind, normalizer=None)
    path = small_vocabulary(swapped, 1024, tmp_path / "tokenizer.json")  # GGUFReader parses 49k strings slowly
    ours = gguf_tokenizer({"type": "gguf", "path": str(write_gguf(tmp_path / "t.gguf", "llama", {}, {}, path,
                                                                  pre=KINDS[kind][2]))})
    reference = Tokenizer.from_file(str(path))
    assert ours.pre_tokenizer.name == KINDS[kind][2] and not ours.vocabulary.nfc
    for text in texts:
        assert ours.encode(text) == hf_ids(reference, text), text[:60]


def test_merges_tiktoken_would_run_in_another_order_are_refused(tmp_path, hf_smollm2):
    data = json.loads((hf_smollm2 / "tokenizer.json").read_text(encoding="utf-8"))
    merges = data["model"]["merges"]
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps({**data, "model": {**data["model"], "merges": [merges[1], merges[0], *merges[2:]]}}))
    with pytest.raises(ValueError, match=r"merge 1 \(.*\) does not create the next token id .got \d+, after \d+.; "
                                         "tiktoken cannot run this vocabulary$"):
        hf_tokenizer(path)
