"""gptlab's named prompt styles as Jinja chat templates: each renders a conversation as the text the style
itself frames (`PromptStyle.chat_ids`, which tokenizes each piece apart: where pieces meet at plain text, as
Alpaca's system lines and header do, a template tokenized whole may cut there differently; ChatML's pieces
meet at special tokens, so its ids are equal too, as `tests/e2e/test_cli_gguf_export.py` checks)."""

from __future__ import annotations

import dataclasses

import pytest

from gptlab.chat_formats import as_chat_template, named_style
from gptlab.prompts import PROMPT_STYLES
from gptlab.tokenizer import GPT2Tokenizer

CONVERSATION = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Name a color."}]


@pytest.mark.parametrize("name", list(PROMPT_STYLES))
@pytest.mark.parametrize("system", [None, "Be brief."])
def test_a_styles_template_renders_the_styles_ids(name, system):
    tokenizer = GPT2Tokenizer()
    style = dataclasses.replace(PROMPT_STYLES[name], default_system="You help." if name == "chatml" else "")
    template = as_chat_template(style, None, name, "<|endoftext|>")
    messages = ([{"role": "system", "content": system}] if system else []) + CONVERSATION
    framed = style.chat_ids(tokenizer, system, [("Hi", "Hello.")], "Name a color.")
    assert template.render(messages) == tokenizer.decode(framed)
    assert named_style(template) == style  # and the template is recognised as the style, default system included
