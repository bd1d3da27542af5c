"""Instruction data: records, seeded splits, and the collate that masks with -100.

A record is `instruction`, optional `input`, and `output`. A prompt style (`gptlab.prompts`)
turns the first two into the text the model continues; training teaches it to continue with the output and then
`<|endoftext|>`. Prompt and output are tokenized separately, so the tokens a model is trained
to answer after are exactly the tokens it sees when it is asked (chat, evaluation, server).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gptlab.data.reading import jsonl_rows, read_utf8
from gptlab.files import REGISTRY, fetch
from gptlab.prompts import Style
from gptlab.tokenizer import Tokenizer

INSTRUCTION_DATA = "instruction-data"
PREFERENCE_DATA = "instruction-data-with-preference"  # the same kind of records, plus chosen/rejected
RECORD_SETS = (INSTRUCTION_DATA, PREFERENCE_DATA)  # registered files of instruction records
IGNORE_INDEX = -100  # targets that add no loss (PyTorch's default `ignore_index`)
@dataclass(frozen=True, eq=False)
class Record:
    """One instruction example, and the record as read (written back beside a model's response)."""

    instruction: str
    input: str
    output: str
    original: dict[str, Any]


def load_records(source: str, instruction_field: str = "instruction", input_field: str = "input",
                 output_field: str = "output", require_output: bool = True,
                 also_required: tuple[str, ...] = ()) -> list[Record]:
    """A registered set (`instruction-data`, `instruction-data-with-preference`) or a JSON list /
    JSONL file of records; `also_required` names more string fields every record must have.

    Errors name the file and the record: its index in a JSON list (from 0, as `data[17]`), or
    its line in a JSONL file.
    """
    registered = source in RECORD_SETS
    path = fetch(source) if registered else Path(source).expanduser()
    if not path.is_file():
        known = ", ".join(RECORD_SETS)
        raise FileNotFoundError(f"{source}: no such file, and not a registered data set (known: {known})")
    name = REGISTRY[source].filename if registered else str(path)
    text = read_utf8(path, name)
    if path.suffix.lower() == ".jsonl":
        rows = [(f"{name}:{number}", row) for number, row in jsonl_rows(name, text)]
    else:
        rows = _json_rows(name, text)
    if not rows:
        raise ValueError(f"{name}: no records found")
    checks = ((instruction_field, True), (input_field, False), (output_field, require_output),
              *((extra, True) for extra in also_required))
    return [_record(where, row, checks) for where, row in rows]


def _json_rows(name: str, text: str) -> list[tuple[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name}:{err.lineno}: not valid JSON ({err.msg})") from None
    except RecursionError:
        raise ValueError(f"{name}: JSON nested too deeply to read") from None
    if not isinstance(data, list):
        raise ValueError(f"{name}: expected a JSON list of records, found {type(data).__name__}")
    return [(f"{name}, record {i}", row) for i, row in enumerate(data)]


def _record(where: str, row: Any, checks: tuple[tuple[str, bool], ...]) -> Record:
    """The record of `row`, whose fields `checks` lists (instruction, input, output, any more)
    as (name, required); each present one must be a string."""
    if not isinstance(row, dict):
        wanted = ", ".join(repr(field) for field, required in checks if required)
        raise ValueError(f"{where}: expected an object with the fields {wanted}")
    values = []
    for field, required in checks:
        value = row.get(field)
        if value is None and required:
            raise ValueError(f"{where}: missing {field!r} field (found: {', '.join(map(str, row)) or 'none'})")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where}: field {field!r} must be a string, found {type(value).__name__}")
        values.append(value or "")
    if not values[0].strip():
        raise ValueError(f"{where}: empty {checks[0][0]!r}")
    return Record(values[0], values[1], values[2], original=row)


def write_records(records: list[Record], path: Path, responses: list[str] | None = None) -> None:
    """A JSON list of the records as read, each with its `model_response` when given (the book's format)."""
    rows = [dict(r.original) for r in records]
    if responses is not None:
        for row, response in zip(rows, responses, strict=True):
            row["model_response"] = response
    path.write_text(json.dumps(rows, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")


def encode_record(record: Record, tokenizer: Tokenizer, style: Style) -> tuple[list[int], int]:
    """Token ids of prompt + output, and how many of them are the prompt."""
    prompt = tokenizer.encode(style.prompt(record.instruction, record.input))
    return prompt + tokenizer.encode(record.output), len(prompt)


def collate(items: list[tuple[list[int], int]], pad_id: int, mask_prompt: bool = True,
            max_length: int | None = None) -> tuple[Tensor, Tensor]:
    """Inputs and next-token targets (B, T) for `encode_record` items, padded to the longest.

    Each sequence is followed by one `pad_id` (end-of-text), which stays a target so the model
    learns to stop; later padding and, with `mask_prompt`, the targets inside the prompt are
    `IGNORE_INDEX`. `max_length` truncates both to that many positions.
    """
    width = max(len(ids) for ids, _ in items)
    inputs = torch.full((len(items), width), pad_id, dtype=torch.long)
    targets = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, prompt_length) in enumerate(items):
        inputs[row, :len(ids)] = torch.tensor(ids)
        targets[row, :len(ids)] = torch.tensor(ids[1:] + [pad_id])
        if mask_prompt:
            targets[row, :prompt_length - 1] = IGNORE_INDEX  # position P-1 predicts the first output token
    if max_length is not None:
        inputs, targets = inputs[:, :max_length], targets[:, :max_length]
    return inputs, targets
