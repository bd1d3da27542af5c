"""A conversation with an instruction-tuned model: earlier turns and the prompt for the next answer.

Shared by the terminal chat and the HTTP server, so a model answers the same way in both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from gptlab.data.instruction import PromptStyle
from gptlab.generation import GenerationSettings
from gptlab.tokenizer import Tokenizer


@dataclass
class Conversation:
    """Earlier turns as token ids; each new prompt carries as many of the latest as the context allows.

    `preamble` (e.g. an API client's system message) starts every prompt and is never dropped.
    """

    tokenizer: Tokenizer
    style: PromptStyle
    context_length: int
    preamble: list[int] = field(default_factory=list)
    turns: list[list[int]] = field(default_factory=list)

    @classmethod
    def opened(cls, tokenizer: Tokenizer, style: PromptStyle, context_length: int,
               system: str | None = None) -> Conversation:
        """A conversation opened as the style opens one: its system message (ChatML), or for styles
        without one, a given `system` text as plain lines before the first turn."""
        if style.system_template:
            preamble = style.system(system)
        else:
            preamble = system + "\n\n" if system else ""
        return cls(tokenizer, style, context_length, tokenizer.encode(preamble) if preamble else [])

    def prompt(self, message: str, max_new_tokens: int) -> list[int]:
        """Token ids to continue: preamble, the latest turns that fit, then the new message in the prompt style."""
        new = self.tokenizer.encode(self.style.turn(message))
        room = self.context_length - max_new_tokens - len(new) - len(self.preamble)
        history: list[int] = []
        for turn in reversed(self.turns):
            if len(turn) > room:
                break
            history, room = turn + history, room - len(turn)
        return self.preamble + history + new

    def add(self, message: str, response: str) -> None:
        """Remember a finished turn, ended with end-of-text as in training (and the style's separator)."""
        ids = self.tokenizer.encode(self.style.turn(message)) + self.tokenizer.encode(response)
        ids += [self.tokenizer.eos_id] if self.tokenizer.eos_id is not None else []
        self.turns.append(ids + (self.tokenizer.encode(self.style.turn_separator) if self.style.turn_separator else []))


def answer_settings(settings: GenerationSettings, tokenizer: Tokenizer, style: PromptStyle) -> GenerationSettings:
    """`settings` that also end an answer where the model starts the next turn (end-of-text, style stops)."""
    eos = () if tokenizer.eos_id is None else (tokenizer.eos_id,)
    return dataclasses.replace(settings, stop_ids=tuple(dict.fromkeys((*settings.stop_ids, *eos))),
                               stop_strings=tuple(dict.fromkeys((*settings.stop_strings, *style.stop_strings))))
