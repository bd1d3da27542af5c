"""Tokenizers: pinned GPT-2 ids, round trips on every mirrored text, char vocabularies, file errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gptlab.tokenizer import CharTokenizer, GPT2Tokenizer, get_tokenizer, tokenizer_from_dict


@pytest.fixture(scope="module")
def gpt2() -> Iterator[GPT2Tokenizer]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPTLAB_OFFLINE", "1")  # the mirror must be enough; never touch the network
        yield GPT2Tokenizer()


def json_strings(value: object) -> Iterator[str]:
    """Every string field of a JSON document, depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from json_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from json_strings(v)


def mirror_texts(data_dir: Path) -> dict[str, str]:
    texts = {
        name: (data_dir / name).read_text(encoding="utf-8")
        for name in ("the-verdict.txt", "tinyshakespeare.txt", "SMSSpamCollection.tsv")
    }
    for name in ("instruction-data.json", "instruction-data-with-preference.json"):
        records = json.loads((data_dir / name).read_text(encoding="utf-8"))
        texts[name] = "\n".join(json_strings(records))
    return texts


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("Hello, world! <|endoftext|>", [15496, 11, 995, 0, 220, 50256]),
        ("Hello world", [15496, 995]),
        ("Akwirw ier", [33901, 86, 343, 86, 220, 959]),
        (
            "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace.",
            [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 286, 617, 34680,
             27271, 13],
        ),
        ("naïve café – 你好", [2616, 38776, 40304, 784, 220, 19526, 254, 25001, 121]),
        ("", []),
    ],
)
def test_gpt2_pinned_ids(gpt2: GPT2Tokenizer, text: str, ids: list[int]) -> None:
    assert gpt2.encode(text) == ids
    assert gpt2.decode(ids) == text


def test_gpt2_token_counts_match_published_numbers(gpt2: GPT2Tokenizer, data_dir: Path) -> None:
    verdict = (data_dir / "the-verdict.txt").read_text(encoding="utf-8")
    assert len(gpt2.encode(verdict)) == 5145  # LLMs-from-scratch, chapter 2
    shakespeare = (data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8")
    split = int(len(shakespeare) * 0.9)  # nanoGPT data/shakespeare/prepare.py
    assert len(gpt2.encode(shakespeare[:split])) == 301966
    assert len(gpt2.encode(shakespeare[split:])) == 36059


def test_gpt2_round_trips_every_mirrored_text(gpt2: GPT2Tokenizer, data_dir: Path) -> None:
    for name, text in mirror_texts(data_dir).items():
        ids = gpt2.encode(text)
        assert max(ids) < gpt2.vocab_size, name
        assert gpt2.decode(ids) == text, name


def test_gpt2_matches_hugging_face_tokenizers(gpt2: GPT2Tokenizer, data_dir: Path) -> None:
    """An independent BPE implementation reading the same two files gives the same ids."""
    tokenizers = pytest.importorskip("tokenizers")
    reference = tokenizers.Tokenizer(
        tokenizers.models.BPE.from_file(str(data_dir / "gpt2/encoder.json"), str(data_dir / "gpt2/vocab.bpe"))
    )
    reference.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    for name, text in mirror_texts(data_dir).items():
        if name != "tinyshakespeare.txt":  # covered by the published counts above
            assert gpt2.encode(text) == reference.encode(text).ids, name


def test_gpt2_decode_bytes_keeps_split_characters(gpt2: GPT2Tokenizer) -> None:
    ids = gpt2.encode("🙂")
    assert ids == [8582, 25081]
    head = gpt2.decode_bytes(ids[:1])
    assert head == b"\xf0\x9f"  # the first half of a 4-byte UTF-8 sequence
    assert head + gpt2.decode_bytes(ids[1:]) == "🙂".encode()
    assert gpt2.decode(ids[:1]) == "\ufffd"


def test_gpt2_description_and_limits(gpt2: GPT2Tokenizer) -> None:
    assert (gpt2.name, gpt2.vocab_size, gpt2.eos_id) == ("gpt2", 50257, 50256)
    assert gpt2.to_dict() == {"type": "gpt2"}
    again = tokenizer_from_dict(json.loads(json.dumps(gpt2.to_dict())))
    assert isinstance(again, GPT2Tokenizer)
    assert again._encoding is gpt2._encoding  # built once per process
    with pytest.raises(ValueError, match=r"token id 50257 is outside the GPT-2 vocabulary 0\.\.50256"):
        gpt2.decode([15496, 50257])


def test_gpt2_explicit_paths(gpt2: GPT2Tokenizer, data_dir: Path) -> None:
    tok = GPT2Tokenizer(data_dir / "gpt2" / "encoder.json", str(data_dir / "gpt2" / "vocab.bpe"))
    assert tok.encode("Hello world") == [15496, 995]


@pytest.fixture
def gpt2_files(tmp_path: Path, data_dir: Path) -> tuple[Path, Path]:
    encoder, vocab = tmp_path / "encoder.json", tmp_path / "vocab.bpe"
    shutil.copy(data_dir / "gpt2" / "encoder.json", encoder)
    shutil.copy(data_dir / "gpt2" / "vocab.bpe", vocab)
    return encoder, vocab


def test_malformed_encoder_json_is_a_readable_error(gpt2_files: tuple[Path, Path]) -> None:
    encoder, vocab = gpt2_files
    encoder.write_text('{"!": 0, "\\"": 1')
    with pytest.raises(ValueError, match=r"encoder.json is not a GPT-2 encoder.json: not valid UTF-8 JSON"):
        GPT2Tokenizer(encoder, vocab)
    encoder.write_text('["!", "\\""]')
    with pytest.raises(ValueError, match="expected a JSON object of token -> integer id"):
        GPT2Tokenizer(encoder, vocab)
    encoder.write_text('{"!": 0, "<|endoftext|>": 1}')
    with pytest.raises(ValueError, match=r"expected 50257 tokens with <\|endoftext\|> = 50256, found 2 tokens"):
        GPT2Tokenizer(encoder, vocab)


def test_encoder_and_merges_must_agree(gpt2_files: tuple[Path, Path]) -> None:
    encoder, vocab = gpt2_files
    lines = vocab.read_text(encoding="utf-8").split("\n")
    lines[1], lines[2] = lines[2], lines[1]  # swap the first two merges
    vocab.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.bpe, line 2: merging 'Ġ' \+ 'a' should give token id 256, "
                                         r"but the encoder has 257; the encoder and merges files do not match"):
        GPT2Tokenizer(encoder, vocab)
    vocab.write_text("\n".join(lines[:-100]), encoding="utf-8")
    with pytest.raises(ValueError, match="has 49901 merges but the encoder has 50256 tokens; expected 50000"):
        GPT2Tokenizer(encoder, vocab)
    vocab.write_text("Ġ t\n", encoding="utf-8")
    with pytest.raises(ValueError, match="the first line should be '#version: 0.2'"):
        GPT2Tokenizer(encoder, vocab)


def test_char_tokenizer_round_trip(data_dir: Path) -> None:
    text = (data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8")
    tok = CharTokenizer.from_text(text)
    assert (tok.name, tok.vocab_size, tok.eos_id) == ("char", 65, None)  # nanoGPT's shakespeare_char
    assert tok.chars[:14] == "\n !$&',-.3:;?A"
    assert tok.encode("First Citizen") == [18, 47, 56, 57, 58, 1, 15, 47, 58, 47, 64, 43, 52]
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode_bytes(tok.encode("Hi!")) == b"Hi!"


def test_char_tokenizer_description_round_trip() -> None:
    tok = CharTokenizer.from_text("héllo wörld")
    assert tok.to_dict() == {"type": "char", "chars": " dhlorwéö"}
    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert isinstance(again, CharTokenizer)
    assert again.encode("wörld") == tok.encode("wörld") == [6, 8, 5, 3, 1]


def test_char_tokenizer_errors() -> None:
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match=r"character 'z' at position 2 is not in this tokenizer's 3-character"):
        tok.encode("abzc")
    with pytest.raises(ValueError, match=r"token id 3 is outside this tokenizer's vocabulary 0\.\.2"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match="alphabet repeats 'a'"):
        CharTokenizer("aba")
    with pytest.raises(ValueError, match="empty text"):
        CharTokenizer.from_text("")


def test_get_tokenizer_by_name(gpt2: GPT2Tokenizer) -> None:
    assert isinstance(get_tokenizer("gpt2"), GPT2Tokenizer)
    assert get_tokenizer("char", text="abca").to_dict() == {"type": "char", "chars": "abc"}
    with pytest.raises(ValueError, match="builds its alphabet from the training text"):
        get_tokenizer("char")
    with pytest.raises(ValueError, match=r"unknown tokenizer 'bpe' \(no such file or folder\); choose gpt2 "
                                         r"\(tiktoken\), gpt2-scratch \(gptlab's own BPE\), char, or a trained"):
        get_tokenizer("bpe")


def test_unknown_description_is_a_readable_error() -> None:
    with pytest.raises(ValueError, match=r"unknown tokenizer description \{'type': 'wordpiece'\}"):
        tokenizer_from_dict({"type": "wordpiece"})
    with pytest.raises(ValueError, match="needs a non-empty 'chars' string, got None"):
        tokenizer_from_dict({"type": "char"})


@pytest.mark.parametrize("text", [" " * 1_000_000, " \n\t" * 3_500_000, "word " * 60_000 + " " * 300_000 + "end"])
def test_texts_of_any_length_encode_and_decode_back(text):
    tokenizer = GPT2Tokenizer()
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_long_text_is_cut_where_no_token_changes():
    from gptlab.tokenizer.chunks import safe_pieces

    text = "Every effort moves you, 12 times.\n  Said he!" * 300
    pieces = list(safe_pieces(text, limit=1000))
    assert "".join(pieces) == text and max(map(len, pieces)) <= 1000 and len(pieces) > 10
    tokenizer = GPT2Tokenizer()
    assert [i for piece in pieces for i in tokenizer.encode(piece)] == tokenizer.encode(text)


def test_the_built_in_models_tokenizer_takes_a_million_spaces_too():
    from gptlab.tokenizer.bytelevel import gguf_tokenizer

    tokenizer = gguf_tokenizer({"type": "builtin", "name": "smollm2"})
    text = " " * 1_000_000 + "and 42 more"
    assert tokenizer.decode(tokenizer.encode(text)) == text
