"""gptlab's named prompt styles written as other programs' chat templates, for models that leave gptlab:
a Jinja template (GGUF's `tokenizer.chat_template`, which llama.cpp and LM Studio render) and Ollama's
Go template; and the other way, the named style a model's own Jinja template renders as (so an
Ollama Modelfile can spell it in Go, which cannot run Jinja).

Each is generated from the style's own pieces (`PromptStyle`), so it frames a conversation exactly as
`PromptStyle.chat_ids` does: the system message, each user turn between the style's header and its
response prefix, each answer ended by the end-of-text token and the turn separator. Literal text is
written as quoted strings inside the template's tags, so whitespace control never eats the style's own
line breaks. Text and templates only: no torch.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence

from gptlab.prompts import PROMPT_STYLES, PromptStyle
from gptlab.tokenizer.chat_template import ChatTemplate, TemplateRefused

# conversations a template must render as the style does to count as that style
PROBES: tuple[tuple[dict[str, str], ...], ...] = (
    ({"role": "user", "content": "Hi"},),
    ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}),
    ({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
     {"role": "user", "content": "2+2?"}),
)


def _quoted(text: str) -> str:
    """`text` as a string literal that both Jinja and Go read back unchanged (JSON's escapes are valid in both)."""
    return json.dumps(text)


def _system_parts(style: PromptStyle) -> tuple[str, str]:
    """The text before and after a system message: the style's own frame, else the message as plain lines."""
    if style.system_template:
        before, _, after = style.system_template.partition("{system}")
        return before, after
    return "", "\n\n"


def jinja_template(style: PromptStyle) -> str:
    """A Jinja chat template (transformers' and llama.cpp's variables: messages, eos_token) that renders a
    conversation as gptlab frames it in `style`, the style's default system message when none is given."""
    before, after = _system_parts(style)
    default = (f"{{%- if not messages or messages[0]['role'] != 'system' -%}}"
               f"{{{{ {_quoted(before + style.default_system + after)} }}}}{{%- endif -%}}\n"
               if style.default_system else "")
    return (
        default
        + "{%- for message in messages -%}\n"
        f"{{%- if message['role'] == 'system' -%}}{{{{ {_quoted(before)} + message['content'] + {_quoted(after)} }}}}\n"
        f"{{%- elif message['role'] == 'user' -%}}"
        f"{{{{ {_quoted(style.header)} + message['content'] + {_quoted(style.response_prefix)} }}}}\n"
        f"{{%- elif message['role'] == 'assistant' -%}}"
        f"{{{{ message['content'] + eos_token + {_quoted(style.turn_separator)} }}}}\n"
        "{%- endif -%}\n{%- endfor -%}\n"
    )


def ollama_template(style: PromptStyle, eos_token: str) -> str:
    """The same framing in Ollama's Go template language (its `.Messages`, each with `.Role` and `.Content`;
    Ollama passes a Modelfile's SYSTEM as the first message)."""
    before, after = _system_parts(style)
    return (
        "{{- range .Messages }}\n"
        f'{{{{- if eq .Role "system" }}}}{{{{ {_quoted(before)} }}}}{{{{ .Content }}}}{{{{ {_quoted(after)} }}}}\n'
        f'{{{{- else if eq .Role "user" }}}}{{{{ {_quoted(style.header)} }}}}{{{{ .Content }}}}'
        f"{{{{ {_quoted(style.response_prefix)} }}}}\n"
        f'{{{{- else if eq .Role "assistant" }}}}{{{{ .Content }}}}'
        f"{{{{ {_quoted(eos_token + style.turn_separator)} }}}}\n"
        "{{- end }}\n{{- end }}"
    )


def as_chat_template(style: PromptStyle, like: ChatTemplate | None, source: str, eos_token: str) -> ChatTemplate:
    """`style` as a `ChatTemplate` with the tokens of `like` (a model's own) or the given end-of-text text."""
    return ChatTemplate(jinja_template(style), source, like.bos_token if like else "",
                        like.eos_token if like else eos_token)


def named_style(template: ChatTemplate) -> PromptStyle | None:
    """The named style, with the default system message the template inserts, that renders every probe
    conversation as `template` does; None when no named style does (the template is its own)."""
    for style in PROMPT_STYLES.values():
        candidate = dataclasses.replace(style, default_system=_default_system(template, style))
        mirror = as_chat_template(candidate, template, template.source, template.eos_token)
        if all(_rendered(template, probe) == _rendered(mirror, probe) for probe in PROBES):
            return candidate
    return None


def _default_system(template: ChatTemplate, style: PromptStyle) -> str:
    """The system message `template` writes in `style`'s frame when a conversation gives none ("" for none)."""
    before, after = _system_parts(style)
    text = _rendered(template, PROBES[0]) or ""
    if not style.system_template or not before or not text.startswith(before):
        return ""
    return text[len(before):].partition(after)[0]


def _rendered(template: ChatTemplate, messages: Sequence[Mapping[str, str]]) -> str | None:
    try:
        return template.render(messages)
    except TemplateRefused:
        return None
