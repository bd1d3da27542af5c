"""Preference data for DPO: an instruction record with a chosen and a rejected response.

Records are read by `load_records` (same files, same errors naming the file and record), and
both responses follow the same prompt, so a pair is the prompt's ids plus each response's ids.
Chosen and rejected rows go through the instruction `collate` together: one batch, one
padding width, one forward pass of the model for both.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from gptlab.data.instruction import IGNORE_INDEX, Record, collate, load_records
from gptlab.prompts import Style
from gptlab.tokenizer import Tokenizer

PairIds = tuple[list[int], list[int], list[int]]  # token ids of the prompt, the chosen and the rejected response


@dataclass(frozen=True, eq=False)
class Preference:
    """An instruction record (as read, for writing back) and its two responses, better one first."""

    record: Record
    chosen: str
    rejected: str


def load_preferences(source: str, instruction_field: str = "instruction", input_field: str = "input",
                     chosen_field: str = "chosen", rejected_field: str = "rejected") -> list[Preference]:
    """`instruction-data-with-preference` (registry) or a JSON list / JSONL file of records with
    an instruction, an optional input, and string `chosen_field` and `rejected_field` responses."""
    records = load_records(source, instruction_field, input_field, require_output=False,
                           also_required=(chosen_field, rejected_field))
    return [Preference(r, r.original[chosen_field], r.original[rejected_field]) for r in records]


def encode_preference(preference: Preference, tokenizer: Tokenizer, style: Style) -> PairIds:
    """Token ids of the prompt (in `style`) and of each response, tokenized apart as in SFT."""
    record = preference.record
    prompt = tokenizer.encode(style.prompt(record.instruction, record.input))
    return prompt, tokenizer.encode(preference.chosen), tokenizer.encode(preference.rejected)


def collate_preferences(items: list[PairIds], pad_id: int, mask_prompt: bool = True,
                        max_length: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs, next-token targets and a response mask, each (2B, T): the B chosen rows, then the
    B rejected rows, padded together with `pad_id` (end-of-text).

    The mask selects the targets a response is scored on: its tokens and the first end-of-text
    after it (as in SFT: ending there is part of the answer); not padding, nor the prompt with
    `mask_prompt`. Targets outside the mask are `pad_id`, so every target is a valid token id.
    """
    rows = ([(prompt + chosen, len(prompt)) for prompt, chosen, _ in items]
            + [(prompt + rejected, len(prompt)) for prompt, _, rejected in items])
    inputs, targets = collate(rows, pad_id, mask_prompt, max_length)  # (2B, T) each
    mask = targets != IGNORE_INDEX
    return inputs, targets.masked_fill(~mask, pad_id), mask
