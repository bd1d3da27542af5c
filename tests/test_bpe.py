"""gptlab's own BPE: gpt2-scratch gives tiktoken's ids on every mirrored text; trained vocabularies are
deterministic, learn Hugging Face's merges, and run with the same ids in tiktoken and HF `tokenizers`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tokenizers import Regex, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from gptlab.tokenizer import (
    BPETokenizer,
    BPEVocabulary,
    GPT2Tokenizer,
    get_tokenizer,
    gpt2_scratch,
    load_bpe,
    save_bpe,
    tokenizer_from_dict,
    train_bpe,
)
from gptlab.tokenizer.bpe import merge_parts
from gptlab.tokenizer.patterns import GPT4_PATTERN, pattern_named
from test_tokenizer import json_strings

ENDOFTEXT = "<|endoftext|>"


@pytest.fixture(scope="module")
def scratch() -> BPETokenizer:
    return gpt2_scratch()


@pytest.fixture(scope="module")
def tiktoken_gpt2() -> GPT2Tokenizer:
    return GPT2Tokenizer()


@pytest.fixture(scope="module")
def verdict(data_dir: Path) -> str:
    return (data_dir / "the-verdict.txt").read_text(encoding="utf-8")


def every_mirrored_text(data_dir: Path) -> dict[str, list[str]]:
    """Every file of the mirror whole (both books, GPT-2's own two files, ...), every SMS message, every string
    of every instruction and preference record."""
    texts = {str(path.relative_to(data_dir)): [path.read_text(encoding="utf-8")]
             for path in sorted(data_dir.rglob("*")) if path.is_file()}
    with open(data_dir / "SMSSpamCollection.tsv", encoding="utf-8", newline="") as f:
        texts["sms"] = [row[1] for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    for name in ("instruction-data.json", "instruction-data-with-preference.json"):
        texts[f"{name} records"] = list(json_strings(json.loads((data_dir / name).read_text(encoding="utf-8"))))
    return texts


def test_gpt2_scratch_gives_tiktokens_ids_on_every_mirrored_text(scratch, tiktoken_gpt2, data_dir: Path) -> None:
    texts = every_mirrored_text(data_dir)
    assert len(texts["sms"]) == 5574 and len(texts["instruction-data.json records"]) == 3300
    assert {"the-verdict.txt", "tinyshakespeare.txt", "gpt2/encoder.json", "gpt2/vocab.bpe"} <= set(texts)
    for name, items in texts.items():
        for number, text in enumerate(items):
            ids = scratch.encode(text)
            assert ids == tiktoken_gpt2.encode(text), (name, number)
            assert scratch.decode(ids) == text, (name, number)


@pytest.mark.parametrize(("text", "ids"), [
    ("Hello, world! <|endoftext|>", [15496, 11, 995, 0, 220, 50256]),
    ("Akwirw ier", [33901, 86, 343, 86, 220, 959]),
    ("naïve café – 你好", [2616, 38776, 40304, 784, 220, 19526, 254, 25001, 121]),
    ("it's they'll  \n\n  end", [270, 338, 484, 1183, 220, 220, 628, 220, 886]),
    ("", []),
])
def test_gpt2_scratch_pinned_ids(scratch: BPETokenizer, text: str, ids: list[int]) -> None:
    assert scratch.encode(text) == ids
    assert scratch.decode(ids) == text
    assert (scratch.name, scratch.vocab_size, scratch.eos_id) == ("gpt2-scratch", 50257, 50256)


def test_gpt2_scratch_decodes_invalid_utf8_as_gpt2_does(scratch: BPETokenizer, tiktoken_gpt2) -> None:
    ids = scratch.encode("🙂")
    assert ids == [8582, 25081]
    assert scratch.decode_bytes(ids[:1]) == b"\xf0\x9f"
    for broken in (ids[:1], ids[1:], [172], [172, 15496]):  # half a character, a lone continuation byte, ...
        assert scratch.decode(broken) == tiktoken_gpt2.decode(broken)
        assert "\ufffd" in scratch.decode(broken)
    with pytest.raises(ValueError, match=r"token id 50257 is not in this vocabulary \(ids 0\.\.50256\)"):
        scratch.decode([50257])


def test_lone_surrogates_are_refused_clearly(scratch: BPETokenizer) -> None:
    with pytest.raises(ValueError, match=r"lone surrogate U\+D83D at character 3; .*errors='replace'"):
        scratch.encode("abc\ud83d def")


def test_a_long_run_of_spaces_merges_in_n_log_n(scratch: BPETokenizer, tiktoken_gpt2) -> None:
    text = "x" + " " * 60_000 + "y\n"
    assert scratch.encode(text) == tiktoken_gpt2.encode(text)
    assert merge_parts(b"aaaa", {b"a": 0, b"aa": 1}) == [b"aa", b"aa"]  # leftmost first on equal ranks
    assert merge_parts(b"aaa", {b"a": 0, b"aa": 1}) == [b"aa", b"a"]


def test_gpt2_scratch_by_name_and_from_a_checkpoint_description(scratch: BPETokenizer) -> None:
    assert scratch.to_dict() == {"type": "gpt2-scratch"}
    for again in (get_tokenizer("gpt2-scratch"), tokenizer_from_dict({"type": "gpt2-scratch"})):
        assert isinstance(again, BPETokenizer) and again.encode("Every effort moves you") == [6109, 3626, 6100, 345]


@pytest.fixture(scope="module")
def trained(verdict: str) -> BPEVocabulary:
    return train_bpe([verdict], 700, name="verdict-700")


def hf_trainer_merges(text: str, vocab_size: int, pre_tokenizer) -> list[str]:
    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[ENDOFTEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([text], trainer)
    return [" ".join(merge) for merge in json.loads(tokenizer.to_str())["model"]["merges"]]


def test_trained_merges_equal_hugging_faces_trainer(trained: BPEVocabulary, verdict: str) -> None:
    assert len(trained.merges) == 700 - 256 - 1
    assert trained.to_dict()["merges"] == hf_trainer_merges(verdict, 700, pre_tokenizers.ByteLevel(False))
    gpt4 = train_bpe([verdict], 600, pattern=GPT4_PATTERN)
    split = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(GPT4_PATTERN), "isolated"),
                                     pre_tokenizers.ByteLevel(False, use_regex=False)])
    assert gpt4.to_dict()["merges"] == hf_trainer_merges(verdict, 600, split)


def test_training_is_deterministic_and_round_trips(trained: BPEVocabulary, verdict: str, data_dir: Path) -> None:
    assert train_bpe([verdict], 700, name="verdict-700").to_dict() == trained.to_dict()
    tokenizer = BPETokenizer(trained)
    assert (tokenizer.vocab_size, tokenizer.eos_id) == (700, 699)
    for text in (verdict, "Hello <|endoftext|> 🙂 ünïcödé\t\r\n  x", (data_dir / "tinyshakespeare.txt").read_text()):
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text and max(ids) < 700
    assert tokenizer.encode(ENDOFTEXT) == [699]
    assert len(tokenizer.encode(verdict)) < 0.45 * len(verdict)  # 443 merges learned the book's commonest words


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_exports_run_in_tiktoken_and_hugging_face_with_the_same_ids(trained, verdict: str, pattern: str,
                                                                    tmp_path: Path, data_dir: Path,
                                                                    monkeypatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken would cache files by path
    vocabulary = trained if pattern == "gpt2" else train_bpe([verdict], 700, pattern=GPT4_PATTERN)
    names = [p.name for p in save_bpe(vocabulary, tmp_path)]
    assert names == ["bpe.json", "encoder.json", "vocab.bpe", "tokenizer.json", "tokenizer_config.json"]
    ours = load_bpe(tmp_path)
    ranks = data_gym_to_mergeable_bpe_ranks(str(tmp_path / "vocab.bpe"), str(tmp_path / "encoder.json"))
    fast = tiktoken.Encoding("verdict-700", pat_str=vocabulary.pattern, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: 699})
    hf = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    texts = every_mirrored_text(data_dir)
    samples = [*texts["the-verdict.txt"], *texts["sms"][:500], *texts["instruction-data.json records"][:600],
               "Hello <|endoftext|> 🙂 ünïcödé\t\r\n  x 12345 DON'T\n\n"]
    for text in samples:
        ids = ours.encode(text)
        assert ids == fast.encode(text, allowed_special="all") == hf.encode(text).ids, text[:60]
        assert hf.decode(ids, skip_special_tokens=False) == text


def test_a_trained_tokenizer_is_found_by_path_and_recorded_whole(trained, tmp_path: Path) -> None:
    save_bpe(trained, tmp_path / "mine")
    for spec in (str(tmp_path / "mine"), str(tmp_path / "mine" / "bpe.json")):
        assert get_tokenizer(spec).to_dict() == trained.to_dict()
    recorded = json.loads(json.dumps(BPETokenizer(trained).to_dict()))
    assert tokenizer_from_dict(recorded).encode("I had always thought") == BPETokenizer(trained).encode(
        "I had always thought")


def test_bad_settings_and_files_are_clear_errors(trained, verdict: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab size 256 is below the 256 single bytes \\+ 1 special token"):
        train_bpe([verdict], 256)
    with pytest.raises(ValueError, match="the training text is empty"):
        train_bpe(["", ""], 300)
    with pytest.raises(ValueError, match="leaves characters of the text out"):
        train_bpe([verdict], 300, pattern=r"\w+")
    with pytest.raises(ValueError, match=r"pattern '\(' is not gpt2, gpt4 or a valid regex"):
        train_bpe([verdict], 300, pattern=pattern_named("("))
    with pytest.raises(ValueError, match="special tokens must be distinct"):
        train_bpe([verdict], 300, specials=["<a>", "<a>"])
    assert len(train_bpe(["abab"], 1000).merges) == 2  # the text runs out of pairs: fewer merges
    edited = trained.to_dict()
    edited["vocab"][300] = "zz"
    with pytest.raises(ValueError, match=r"mine: 'vocab' disagrees with the merges and specials at id 300"):
        BPEVocabulary.from_dict(edited, "mine")
    edited = trained.to_dict()
    edited["merges"][0] = "nope x"
    with pytest.raises(ValueError, match=r"merge 0 \('nope x'\) must join two tokens made before it"):
        BPEVocabulary.from_dict(edited, "mine")
    (tmp_path / "other.json").write_text('{"type": "char", "chars": "ab"}')
    with pytest.raises(ValueError, match="not a gptlab BPE tokenizer"):
        load_bpe(tmp_path / "other.json")
    with pytest.raises(FileNotFoundError, match="no bpe.json inside"):
        load_bpe(tmp_path)
