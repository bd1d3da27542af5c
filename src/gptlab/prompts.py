"""Prompt styles and conversations: how instructions and chat turns become the text a model continues.

Training (SFT, DPO), evaluation, the terminal chat and the server all frame text here, so a model
is asked exactly the way it was taught. A style's default system message belongs to the model,
not the style: the built-in SmolLM2 brings its own (see `gptlab.models`), a fine-tuned checkpoint
records the one it learned with (`CheckpointMeta.default_system`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from gptlab.checkpoint.meta import CheckpointMeta
from gptlab.generation import Completion, GenerationSettings
from gptlab.model import GPT
from gptlab.tokenizer import Tokenizer

ALPACA_HEADER = ("Below is an instruction that describes a task. "
                 "Write a response that appropriately completes the request.")
DEFAULT_STYLE = "alpaca"  # for a model that records no style of its own


@dataclass(frozen=True)
class PromptStyle:
    """How an instruction (and input) becomes the text before a response, and what ends one."""

    name: str
    header: str  # text before the instruction, in every turn
    input_prefix: str  # between the instruction and a non-empty input
    response_prefix: str  # after instruction and input: the model writes from here
    stop_strings: tuple[str, ...]  # a response ends before any of these (besides end-of-text)
    system_template: str = ""  # a chat's opening system message, once per conversation ({system} = its text)
    default_system: str = ""  # the system text when the user gives none ("" = no system message)
    turn_separator: str = ""  # after a finished answer's end-of-text, before the next turn

    def prompt(self, instruction: str, input: str = "") -> str:
        """Everything the model sees before its response; the input part is left out when empty."""
        return self.system(None) + self.turn(instruction, input)

    def turn(self, instruction: str, input: str = "") -> str:
        """One turn of a conversation, without the system message that opens it."""
        return self.header + instruction + (self.input_prefix + input if input else "") + self.response_prefix

    def system(self, text: str | None) -> str:
        """The opening system message with `text` (None: the style's default); "" for styles without
        one, and when neither `text` nor a default is given."""
        text = self.default_system if text is None else text
        return self.system_template.format(system=text) if text else ""

    def answer_settings(self, settings: GenerationSettings) -> GenerationSettings:
        """`settings` that also end an answer where the model starts the next turn (the style's stops)."""
        return dataclasses.replace(settings, stop_strings=tuple(dict.fromkeys((*settings.stop_strings,
                                                                                *self.stop_strings))))


PROMPT_STYLES = {
    style.name: style
    for style in (
        PromptStyle("alpaca", ALPACA_HEADER + "\n\n### Instruction:\n", "\n\n### Input:\n",
                    "\n\n### Response:\n", ("###",)),
        PromptStyle("phi3", "<|user|>\n", "\n", "\n<|assistant|>\n", ("<|user|>",)),
        # ChatML, as SmolLM2-Instruct was trained: a system message, then user and assistant turns
        PromptStyle("chatml", "<|im_start|>user\n", "\n\n", "<|im_end|>\n<|im_start|>assistant\n",
                    ("<|im_end|>", "<|im_start|>"), system_template="<|im_start|>system\n{system}<|im_end|>\n",
                    turn_separator="\n"),
    )
}


def prompt_style(name: str, default_system: str | None = None) -> PromptStyle:
    """The named style, with the model's default system message if it has one; an error lists the known ones."""
    if name not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {name!r}; known: {', '.join(PROMPT_STYLES)}")
    style = PROMPT_STYLES[name]
    return dataclasses.replace(style, default_system=default_system) if default_system else style


def style_for(meta: CheckpointMeta, name: str | None = None) -> PromptStyle:
    """The style to talk to a model in: `name` if given, else the one it was tuned with, else alpaca;
    with the model's own default system message."""
    return prompt_style(name or meta.prompt_style or DEFAULT_STYLE, meta.default_system)


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

    def completion(self, model: GPT, message: str, settings: GenerationSettings) -> Completion:
        """The model's answer to `message` after the turns so far, ending where the next turn would
        begin; stream it, then `add` the finished answer."""
        settings = self.style.answer_settings(settings)
        return Completion(model, self.tokenizer, self.prompt(message, settings.max_new_tokens), settings)

    def add(self, message: str, response: str) -> None:
        """Remember a finished turn, ended with end-of-text as in training (and the style's separator)."""
        ids = self.tokenizer.encode(self.style.turn(message)) + self.tokenizer.encode(response)
        ids += [self.tokenizer.eos_id] if self.tokenizer.eos_id is not None else []
        self.turns.append(ids + (self.tokenizer.encode(self.style.turn_separator) if self.style.turn_separator else []))
