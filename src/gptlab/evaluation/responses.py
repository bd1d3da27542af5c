"""A model's responses to instruction records: greedy, batched, cut where the prompt style says."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from gptlab.data.instruction import Record
from gptlab.generation import GenerationSettings, generate_batch
from gptlab.model import GPT
from gptlab.prompts import PromptStyle
from gptlab.tokenizer import Tokenizer

RESPONSES_FILE = "instruction-data-with-response.json"


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """`text` up to the first stop string, without surrounding whitespace."""
    ends = [at for stop in stop_strings if (at := text.find(stop)) != -1]
    return text[:min(ends, default=len(text))].strip()


def generate_responses(model: GPT, tokenizer: Tokenizer, style: PromptStyle, records: Sequence[Record],
                       max_new_tokens: int = 256, batch_size: int = 8) -> Iterator[str]:
    """One response per record, in order: greedy decoding (deterministic), ending at end-of-text
    or at the style's stop strings (e.g. the next `###`)."""
    if tokenizer.eos_id is None:
        raise ValueError(f"the {tokenizer.name} tokenizer has no end-of-text token to end responses with")
    context = model.config.context_length
    for start in range(0, len(records), batch_size):
        prompts = [tokenizer.encode(style.prompt(r.instruction, r.input)) for r in records[start:start + batch_size]]
        room = context - max(len(p) for p in prompts)  # new tokens that fit beside the longest prompt
        settings = GenerationSettings(max_new_tokens=min(max_new_tokens, max(room, 1)),
                                      temperature=0).stopping_for(tokenizer)
        for ids in generate_batch(model, prompts, settings):
            yield cut_at_stop(tokenizer.decode(ids), style.stop_strings)
