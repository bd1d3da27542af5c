"""Prompt styles and conversations: how instructions and chat turns become the text a model continues.

Training (SFT, DPO), evaluation, the terminal chat and the server all frame text here, so a model
is asked exactly the way it was taught. Two kinds of style share one interface (`Style`): gptlab's
named styles (`PromptStyle`: alpaca, phi3, chatml) and a model's own Jinja chat template
(`TemplateStyle`), which frames the conversation whenever the model's files carry one and no style
is named. A named style's default system message belongs to the model, not the style: a fine-tuned
checkpoint records the one it learned with (`CheckpointMeta.default_system`); a template brings its own.

Styles are text and token ids only, so this module imports no torch (data preparation uses it); the
model, generation and checkpoint types appear in signatures alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gptlab.tokenizer import Tokenizer
from gptlab.tokenizer.chat_template import ChatTemplate

if TYPE_CHECKING:
    from gptlab.checkpoint.meta import CheckpointMeta
    from gptlab.generation import Completion, GenerationSettings
    from gptlab.model import GPT

TEMPLATE = "template"  # the prompt style of a model that answers in its own chat template
ALPACA_HEADER = ("Below is an instruction that describes a task. "
                 "Write a response that appropriately completes the request.")
DEFAULT_STYLE = "alpaca"  # for a model that records no style of its own
AUTO = "auto"  # the model's own style: the one it was tuned with, else its chat template, else alpaca
Turns = Sequence[tuple[str, str]]  # earlier (user message, answer) pairs of a conversation


class Style(Protocol):
    """What conversations, the trainers, responses and the server ask of a prompt style."""

    @property
    def name(self) -> str: ...  # recorded with a fine-tuned model ("alpaca", ..., or "template")

    @property
    def default_system(self) -> str: ...  # a named style's system text when none is given; "" for a template

    @property
    def stop_strings(self) -> tuple[str, ...]: ...  # a response ends before any of these

    def prompt(self, instruction: str, input: str = "") -> str:
        """Everything the model sees before its response to one instruction (training, responses)."""
        ...

    def chat_ids(self, tokenizer: Tokenizer, system: str | None, turns: Turns, message: str) -> list[int]:
        """Token ids a model continues to answer `message` after `turns` (`system` None: the default)."""
        ...

    def end_id(self, tokenizer: Tokenizer) -> int | None:
        """The token a trained response ends with (and padding), None when the tokenizer has none."""
        ...

    def answer_settings(self, settings: GenerationSettings) -> GenerationSettings:
        """`settings` that also end an answer where the style ends one."""
        ...


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

    def chat_ids(self, tokenizer: Tokenizer, system: str | None, turns: Turns, message: str) -> list[int]:
        """The style's system message (for styles without one, a given `system` as plain lines), then each
        finished turn ended with end-of-text as in training, then `message`: each piece tokenized apart,
        as prompts and responses are in training."""
        opening = self.system(system) if self.system_template else (system + "\n\n" if system else "")
        ids = tokenizer.encode(opening) if opening else []
        end = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
        separator = tokenizer.encode(self.turn_separator) if self.turn_separator else []
        for question, answer in turns:
            ids += tokenizer.encode(self.turn(question)) + tokenizer.encode(answer) + end + separator
        return ids + tokenizer.encode(self.turn(message))

    def end_id(self, tokenizer: Tokenizer) -> int | None:
        """Responses end with the tokenizer's end-of-text."""
        return tokenizer.eos_id

    def answer_settings(self, settings: GenerationSettings) -> GenerationSettings:
        """`settings` that also end an answer where the model starts the next turn (the style's stops)."""
        return dataclasses.replace(settings, stop_strings=tuple(dict.fromkeys((*settings.stop_strings,
                                                                                *self.stop_strings))))


@dataclass(frozen=True)
class TemplateStyle:
    """A model's own chat template as a prompt style: a conversation is rendered whole, as `transformers`'
    `apply_chat_template(..., add_generation_prompt=True)` renders it, and an answer ends at the
    template's end-of-turn token (`<|eot_id|>`, `<|im_end|>`, `<end_of_turn>`...)."""

    template: ChatTemplate
    name: str = TEMPLATE
    default_system: str = ""  # the template writes its own default, if it has one
    stop_strings: tuple[str, ...] = ()  # answers end at token ids (`template.stop_ids`)

    def prompt(self, instruction: str, input: str = "") -> str:
        """The instruction (and input, after a blank line) as one user message, ready for the answer."""
        content = instruction + ("\n\n" + input if input else "")
        return self.template.render([{"role": "user", "content": content}])

    def chat_ids(self, tokenizer: Tokenizer, system: str | None, turns: Turns, message: str) -> list[int]:
        """The whole conversation rendered by the template, then tokenized in one piece (special tokens
        written out become their ids); `system` None leaves the system message to the template."""
        messages = [{"role": "system", "content": system}] if system else []
        for question, answer in turns:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return tokenizer.encode(self.template.render([*messages, {"role": "user", "content": message}]))

    def end_id(self, tokenizer: Tokenizer) -> int | None:
        """The template's end-of-turn token, else the tokenizer's end-of-text."""
        return self.template.end_of_turn if self.template.end_of_turn is not None else tokenizer.eos_id

    def answer_settings(self, settings: GenerationSettings) -> GenerationSettings:
        """`settings` that also stop at every id that ends the template's answers."""
        return dataclasses.replace(settings, stop_ids=tuple(dict.fromkeys((*settings.stop_ids,
                                                                            *self.template.stop_ids))))


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


def style_for(meta: CheckpointMeta, name: str | None = None) -> Style:
    """The style to talk to a model in: `name` if given (None or "auto": the model's own), else the one
    it was tuned with or its file's chat template, else alpaca; a named style with the model's default
    system message."""
    name = meta.prompt_style if name in (None, AUTO) else name
    if name == TEMPLATE:
        if meta.chat_template is None:
            raise ValueError(f"this model has no chat template of its own; choose a prompt style: "
                             f"{', '.join(PROMPT_STYLES)}")
        return TemplateStyle(meta.chat_template)
    return prompt_style(name or DEFAULT_STYLE, meta.default_system)


@dataclass
class Conversation:
    """Earlier turns of a chat; each new prompt carries as many of the latest as the context allows.

    `system` (e.g. an API client's system message; None: the style's default) opens every prompt
    and is never dropped.
    """

    tokenizer: Tokenizer
    style: Style
    context_length: int
    system: str | None = None
    turns: list[tuple[str, str]] = field(default_factory=list)  # (message, answer), oldest first

    def ids(self, message: str, turns: Turns = ()) -> list[int]:
        """Token ids of the prompt for `message` after `turns`, framed by the style."""
        return self.style.chat_ids(self.tokenizer, self.system, turns, message)

    def prompt(self, message: str, max_new_tokens: int) -> list[int]:
        """Token ids to continue: the latest turns that fit beside `max_new_tokens`, oldest dropped first
        (all of them when even the message alone does not fit: generation then cuts it)."""
        for first in range(len(self.turns) + 1):
            ids = self.ids(message, self.turns[first:])
            if len(ids) + max_new_tokens <= self.context_length:
                break
        return ids

    def completion(self, model: GPT, message: str, settings: GenerationSettings) -> Completion:
        """The model's answer to `message` after the turns so far, ending where the next turn would
        begin; stream it, then `add` the finished answer."""
        from gptlab.generation import Completion  # torch, only once a model answers

        settings = self.style.answer_settings(settings)
        return Completion(model, self.tokenizer, self.prompt(message, settings.max_new_tokens), settings)

    def add(self, message: str, response: str) -> None:
        """Remember a finished turn."""
        self.turns.append((message, response))
