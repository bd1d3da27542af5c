"""A model's responses to instruction records: greedy, batched, ended where the prompt style says."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from gptlab.data.instruction import Record
from gptlab.engine import Engine, EngineLimits
from gptlab.generation import GenerationSettings
from gptlab.model import GPT
from gptlab.prompts import Style
from gptlab.tokenizer import Tokenizer

RESPONSES_FILE = "instruction-data-with-response.json"


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """`text` up to the first stop string, without surrounding whitespace."""
    ends = [at for stop in stop_strings if (at := text.find(stop)) != -1]
    return text[:min(ends, default=len(text))].strip()


def generate_responses(model: GPT, tokenizer: Tokenizer, style: Style, records: Sequence[Record],
                       max_new_tokens: int = 256, max_batch: int = 8, compile: bool = False) -> Iterator[str]:
    """One response per record, in order: greedy decoding (deterministic), ending at end-of-text or
    where the style ends an answer (the next `###`, a chat template's end-of-turn token). Records are
    decoded together by the batching engine, `max_batch` at a time, each joining as another one ends."""
    if style.end_id(tokenizer) is None:
        raise ValueError(f"the {tokenizer.name} tokenizer has no end-of-text token to end responses with")
    prompts = [tokenizer.encode(style.prompt(r.instruction, r.input)) for r in records]
    engine = Engine(model, EngineLimits(max_batch=max_batch, max_queue=max(len(prompts), 1)), compile=compile)
    try:
        context = model.config.context_length
        completions = [engine.submit(tokenizer, prompt, style.answer_settings(_greedy(prompt, max_new_tokens, context)))
                       for prompt in prompts]
        for completion in completions:
            for _ in completion:  # wait for it; the text is decoded whole, as the tokenizer decodes it
                pass
            yield cut_at_stop(tokenizer.decode(completion.ids), style.stop_strings)
    finally:
        engine.close(drain=False)


def _greedy(prompt: Sequence[int], max_new_tokens: int, context: int) -> GenerationSettings:
    """Greedy settings whose new tokens fit beside `prompt` (at least one)."""
    return GenerationSettings(max_new_tokens=min(max_new_tokens, max(context - len(prompt), 1)), temperature=0)
