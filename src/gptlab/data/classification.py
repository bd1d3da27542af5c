"""Labelled text for classification: SMS Spam Collection or any CSV/TSV/JSONL file.

Reading validates at the boundary (file and line in every error); balancing and splitting are
seeded and exact, so a run's splits can be reproduced and written beside it.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from gptlab.data.reading import jsonl_rows, read_utf8
from gptlab.files import REGISTRY, fetch
from gptlab.tokenizer import Tokenizer

SMS_SPAM = "sms-spam"


@dataclass(frozen=True)
class Example:
    """One labelled text, with where it came from (for error messages)."""

    text: str
    label: str
    source: str  # "file:line"


@dataclass(frozen=True)
class LabelMap:
    """Label names ↔ class ids; saved with the model so predictions can be named."""

    names: tuple[str, ...]

    @classmethod
    def from_examples(cls, examples: list[Example]) -> LabelMap:
        """Sorted label names of the training examples; at least two classes are required."""
        names = tuple(sorted({e.label for e in examples}))
        if len(names) < 2:
            where = examples[0].source.rsplit(":", 1)[0] if examples else "the data"
            raise ValueError(f"{where}: only one class ({names[0] if names else 'none'!r}); "
                             "classification needs at least two labels")
        return cls(names)

    def ids(self, examples: list[Example]) -> list[int]:
        """Class ids of examples; a label unseen in training is an error naming its line."""
        index = {name: i for i, name in enumerate(self.names)}
        for example in examples:
            if example.label not in index:
                raise ValueError(f"{example.source}: label {example.label!r} does not occur in the "
                                 f"training split (known: {', '.join(self.names)})")
        return [index[e.label] for e in examples]


def load_examples(source: str, text_column: str = "text", label_column: str = "label") -> list[Example]:
    """`sms-spam` (registry) or a .csv/.tsv (header row) / .jsonl file with text and label fields."""
    if source == SMS_SPAM:
        return _read_sms_spam(fetch(SMS_SPAM))
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{source}: no such file, and not a registered data set "
                                f"(known: {SMS_SPAM})")
    text = read_utf8(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(path, text)
    elif suffix in (".csv", ".tsv"):
        rows = _table_rows(path, text, "\t" if suffix == ".tsv" else ",")
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv or .jsonl")
    examples = [_example(path, line, row, text_column, label_column) for line, row in rows]
    if not examples:
        raise ValueError(f"{path}: no examples found")
    return examples


def _read_sms_spam(path: Path) -> list[Example]:
    """The UCI file: `label<TAB>text` per line, no header."""
    examples = []
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        label, sep, text = line.partition("\t")
        if not sep or not text.strip():
            raise ValueError(f"{path}:{number}: expected 'label<TAB>text'")
        examples.append(Example(text, label, f"{REGISTRY[SMS_SPAM].filename}:{number}"))
    return examples


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    rows = jsonl_rows(str(path), text)
    for number, row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object per line")
    return rows


def _table_rows(path: Path, text: str, delimiter: str) -> list[tuple[int, dict]]:
    """Rows with the line each ends on; quoted fields keep their newlines (and U+2028) as they are."""
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))  # one long text is still one cell
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        return [(reader.line_num, row) for row in reader]
    except csv.Error as err:
        raise ValueError(f"{path}:{reader.line_num}: not a readable {'TSV' if delimiter == chr(9) else 'CSV'} "
                         f"row ({err})") from None


def _example(path: Path, line: int, row: dict, text_column: str, label_column: str) -> Example:
    for column in (text_column, label_column):
        if column not in row or row[column] is None:
            raise ValueError(f"{path}:{line}: missing column {column!r} (found: {', '.join(map(str, row))}); "
                             "choose columns with --text-column / --label-column")
    text, label = row[text_column], row[label_column]
    if not isinstance(text, str):
        raise ValueError(f"{path}:{line}: column {text_column!r} must be text, "
                         f"found {type(text).__name__} {text!r:.40}")
    if not text.strip():
        raise ValueError(f"{path}:{line}: empty text in column {text_column!r}")
    return Example(text, str(label).strip(), f"{path}:{line}")


def balance(examples: list[Example], seed: int) -> list[Example]:
    """Down-sample every class to the size of the smallest (seeded), keeping the file order."""
    counts = Counter(e.label for e in examples)
    smallest = min(counts.values())
    rng = random.Random(seed)
    keep: set[int] = set()
    for label in sorted(counts):
        positions = [i for i, e in enumerate(examples) if e.label == label]
        keep.update(rng.sample(positions, smallest))
    return [e for i, e in enumerate(examples) if i in keep]


def write_split(examples: list[Example], path: Path) -> None:
    """A split as JSONL (`text`, `label`), readable again by `load_examples`."""
    with path.open("w", encoding="utf-8") as f:
        for example in examples:
            f.write(json.dumps({"text": example.text, "label": example.label}, ensure_ascii=False) + "\n")


def encode_padded(texts: list[str], tokenizer: Tokenizer, max_length: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """Token ids (N, max_length), truncated and right-padded with `pad_id`, and the real lengths (N,).

    The lengths let the classifier read the last real token instead of a padding position.
    """
    ids = torch.full((len(texts), max_length), pad_id, dtype=torch.long)
    lengths = torch.zeros(len(texts), dtype=torch.long)
    for row, text in enumerate(texts):
        tokens = tokenizer.encode(text)[:max_length]
        if not tokens:
            raise ValueError(f"text {row} encodes to no tokens: {text!r}")
        ids[row, : len(tokens)] = torch.tensor(tokens)
        lengths[row] = len(tokens)
    return ids, lengths
