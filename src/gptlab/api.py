"""The Python API in a few calls: load any model, then continue text, stream it, or ask it.

    from gptlab import load_model, generate, ask
    model = load_model("smollm2")
    print(ask(model, "What is the capital of France?", temperature=0))

These are the paths the CLI takes (`gptlab generate`, `gptlab chat`), so a model answers the same here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from gptlab.generation import Completion, GenerationSettings, compile_decode
from gptlab.loading import LoadedModel
from gptlab.prompts import Conversation, style_for
from gptlab.tokenizer import document_ids


def _settings(settings: GenerationSettings | None, changes: dict[str, Any]) -> GenerationSettings:
    return dataclasses.replace(settings or GenerationSettings(), **changes)


def _compiled(model: LoadedModel, compile: bool) -> None:
    """Compile the model's decode step once when asked (`gptlab generate --compile`); later calls reuse it."""
    if compile and model.model.compiled_step is None:
        compile_decode(model.model)


def stream(model: LoadedModel, prompt: str, settings: GenerationSettings | None = None, compile: bool = False,
           **changes: Any) -> Iterator[str]:
    """Text pieces continuing `prompt` as they are generated; `changes` are `GenerationSettings`
    fields (e.g. `temperature=0, max_new_tokens=50`). Ends at end-of-text or a stop. `compile`
    compiles the one-token decode step first (once per model; slow once, faster decoding after)."""
    _compiled(model, compile)
    ids = document_ids(model.tokenizer, prompt)
    yield from Completion(model.model, model.tokenizer, ids, _settings(settings, changes))


def generate(model: LoadedModel, prompt: str, settings: GenerationSettings | None = None, compile: bool = False,
             **changes: Any) -> str:
    """The continuation of `prompt` (without the prompt), as `gptlab generate` prints it."""
    return "".join(stream(model, prompt, settings, compile, **changes))


def ask(model: LoadedModel, message: str, system: str | None = None, prompt_style: str | None = None,
        settings: GenerationSettings | None = None, compile: bool = False, **changes: Any) -> str:
    """One answer of an instruction-tuned model, framed as `gptlab chat` frames the first message: by
    the model's chat template or its prompt style (`prompt_style` names another; `system` replaces the
    model's default system message)."""
    _compiled(model, compile)
    style = style_for(model.meta, prompt_style)
    conversation = Conversation(model.tokenizer, style, model.model.config.context_length, system)
    return "".join(conversation.completion(model.model, message, _settings(settings, changes))).strip()
