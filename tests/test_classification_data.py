import pytest
import torch

from gptlab.data.classification import LabelMap, balance, encode_padded, load_examples, write_split
from gptlab.data.splits import shuffled_split
from gptlab.tokenizer import GPT2Tokenizer


@pytest.fixture(scope="module")
def sms():
    return load_examples("sms-spam")


def test_sms_spam_is_read_from_the_mirror(sms):
    assert len(sms) == 5574
    assert sum(e.label == "spam" for e in sms) == 747 and sum(e.label == "ham" for e in sms) == 4827
    assert sms[0].source == "SMSSpamCollection.tsv:1" and sms[0].text.startswith("Go until jurong point")


def test_balancing_and_book_split_sizes_are_exact_and_seeded(sms):
    balanced = balance(sms, seed=123)
    assert sum(e.label == "spam" for e in balanced) == sum(e.label == "ham" for e in balanced) == 747
    assert balance(sms, seed=123) == balanced and balance(sms, seed=7) != balanced
    parts = shuffled_split(balanced, 123, {"train": 0.7, "val": 0.1}, rest="test")
    train, val, test = parts["train"], parts["val"], parts["test"]
    assert (len(train), len(val), len(test)) == (1045, 149, 300)  # the book's sizes
    assert shuffled_split(balanced, 123, {"train": 0.7, "val": 0.1}, rest="test") == parts
    sources = [e.source for part in (train, val, test) for e in part]
    assert len(set(sources)) == len(sources) == 1494


def test_label_map_round_trips_and_names_unknown_labels(sms):
    labels = LabelMap.from_examples(sms)
    assert labels.names == ("ham", "spam") and labels.ids(sms[:3]) == [0, 0, 1]
    assert LabelMap(tuple(labels.names)) == labels
    odd = [sms[0].__class__("hi", "eggs", "f.csv:9")]
    with pytest.raises(ValueError, match="f.csv:9: label 'eggs' does not occur in the training split"):
        labels.ids(odd)


def test_any_csv_tsv_or_jsonl_with_any_number_of_classes(tmp_path):
    (tmp_path / "three.csv").write_text("review,stars\ngreat,pos\n\"awful, truly\",neg\nfine,neutral\n")
    examples = load_examples(str(tmp_path / "three.csv"), text_column="review", label_column="stars")
    assert [(e.text, e.label) for e in examples] == [("great", "pos"), ("awful, truly", "neg"), ("fine", "neutral")]
    assert examples[1].source.endswith("three.csv:3")
    assert LabelMap.from_examples(examples).names == ("neg", "neutral", "pos")
    (tmp_path / "t.tsv").write_text("text\tlabel\na b\tx\nc\ty\n")
    assert len(load_examples(str(tmp_path / "t.tsv"))) == 2
    write_split(examples, tmp_path / "split.jsonl")
    again = load_examples(str(tmp_path / "split.jsonl"))
    assert [(e.text, e.label) for e in again] == [(e.text, e.label) for e in examples]


@pytest.mark.parametrize("name, content, message", [
    ("m.csv", "body,label\nhello,a\n", r"m.csv:2: missing column 'text' \(found: body, label\)"),
    ("e.csv", "text,label\nhello,a\n   ,b\n", r"e.csv:3: empty text in column 'text'"),
    ("j.jsonl", '{"text": "a", "label": 1}\n{oops\n', r"j.jsonl:2: not valid JSON"),
    ("x.txt", "whatever", r"unsupported file type '.txt'"),
])
def test_bad_files_name_the_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message):
        load_examples(str(tmp_path / name))


def test_bad_encoding_and_single_class(tmp_path):
    (tmp_path / "latin.csv").write_bytes("text,label\nok,a\ncaf\xe9,b\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.csv:3: not UTF-8 text"):
        load_examples(str(tmp_path / "latin.csv"))
    (tmp_path / "one.csv").write_text("text,label\na,x\nb,x\n")
    with pytest.raises(ValueError, match=r"one.csv: only one class \('x'\)"):
        LabelMap.from_examples(load_examples(str(tmp_path / "one.csv")))


def test_encode_padded_truncates_and_reports_real_lengths():
    tok = GPT2Tokenizer()
    ids, lengths = encode_padded(["Hello, world!", "Hi"], tok, max_length=3, pad_id=50256)
    assert ids.tolist() == [[15496, 11, 995], [17250, 50256, 50256]]
    assert lengths.tolist() == [3, 1]
    assert ids.dtype == torch.long


def _awkward_texts(seed: int, count: int = 60) -> list[str]:
    """Seeded random texts built from the characters readers most often lose or split at."""
    import random

    pieces = ["a", "Zß", "日本", "🙂", " ", "\t", "\n", "\r\n", "\r", "\u2028", "\u2029", "\x85", "\x0b", "\x0c",
              '"', "'", ",", ";", "\\", "{", "}", "[1]", "é", "\u200b", "\ufeff", "#"]
    rng = random.Random(seed)
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 30))) for _ in range(count)]
    return [t if t.strip() else t + "x" for t in texts]  # a text must hold something besides white space


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_every_character_of_every_text_survives_a_round_trip(tmp_path, suffix):
    import csv
    import json

    texts = _awkward_texts(seed=len(suffix))
    labels = [f"class {i % 3}" for i in range(len(texts))]
    path = tmp_path / f"data{suffix}"
    with path.open("w", encoding="utf-8", newline="") as f:
        if suffix == ".jsonl":
            f.writelines(json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n" for t, y in zip(texts, labels))
        else:
            writer = csv.writer(f, delimiter="\t" if suffix == ".tsv" else ",")
            writer.writerows([("text", "label"), *zip(texts, labels)])
    examples = load_examples(str(path))
    assert [(e.text, e.label) for e in examples] == list(zip(texts, labels))
    write_split(examples, tmp_path / "again.jsonl")
    assert [e.text for e in load_examples(str(tmp_path / "again.jsonl"))] == texts


def test_a_long_cell_a_number_for_text_and_deep_nesting_are_one_clear_error_or_fine(tmp_path):
    long = "word " * 40_000  # over csv's default 131,072-character field limit
    (tmp_path / "long.csv").write_text(f'text,label\n"{long}",a\nshort,b\n')
    assert load_examples(str(tmp_path / "long.csv"))[0].text == long
    (tmp_path / "n.jsonl").write_text('{"text": 5, "label": "a"}\n')
    with pytest.raises(ValueError, match=r"n.jsonl:1: column 'text' must be text, found int 5"):
        load_examples(str(tmp_path / "n.jsonl"))
    (tmp_path / "deep.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ValueError, match=r"deep.jsonl:1: JSON nested too deeply"):
        load_examples(str(tmp_path / "deep.jsonl"))
