"""An Ollama Modelfile for an exported GGUF file: `ollama create NAME -f MODEL.Modelfile` then runs it.

Ollama renders prompts with Go templates, not the Jinja template inside the GGUF file, and stops where
its Modelfile says; a model whose template or stop strings are missing answers as if it were never
tuned. So the Modelfile spells out what gptlab itself would do: the prompt style as a Go TEMPLATE
(`chat_formats.ollama_template`), a PARAMETER stop for each string that ends an answer, and the default
system message as SYSTEM. A model whose own chat template matches no named style keeps Ollama's reading
of the GGUF's template (no TEMPLATE line, said in a comment).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gptlab.chat_formats import jinja_template, named_style, ollama_template
from gptlab.files import write_text_atomically
from gptlab.prompts import TEMPLATE, PromptStyle, prompt_style
from gptlab.tokenizer import Tokenizer
from gptlab.tokenizer.chat_template import ChatTemplate

if TYPE_CHECKING:
    from gptlab.checkpoint.meta import CheckpointMeta


@dataclass(frozen=True)
class ExportedChat:
    """How an exported model is prompted, in the forms other programs read."""

    template: ChatTemplate | None  # the Jinja template the GGUF file carries (None: a model without a chat format)
    style: PromptStyle | None  # the named style that template is, for Ollama's Go template (None: its own)
    stops: tuple[str, ...]  # the strings that end an answer


def exported_chat(meta: CheckpointMeta, tokenizer: Tokenizer) -> ExportedChat:
    """The model's own chat template (and the named style it matches), else its named style (a model tuned
    in one, or its family's default) as a template, else nothing: a base model continues text."""
    eos = tokenizer.decode([tokenizer.eos_id]) if tokenizer.eos_id is not None else ""
    if meta.prompt_style == TEMPLATE and meta.chat_template is not None:
        own = meta.chat_template
        stops = tuple(tokenizer.decode([i]) for i in own.stop_ids)
        return ExportedChat(own, named_style(own), stops)
    if meta.prompt_style is None:
        return ExportedChat(None, None, (eos,))
    style = prompt_style(meta.prompt_style, meta.default_system)
    ends = () if tokenizer.eos_id is None else (tokenizer.eos_id,)
    template = ChatTemplate(jinja_template(style), f"gptlab's {style.name} style", "", eos,
                            tokenizer.eos_id, ends)
    return ExportedChat(template, style, (eos, *style.stop_strings))


def modelfile_text(gguf_name: str, chat: ExportedChat, eos_token: str) -> str:
    """The Modelfile for the GGUF file `gguf_name` (beside it)."""
    lines = [f"FROM ./{gguf_name}"]
    if chat.template is None:
        lines += ["# a model without a chat format: prompts go in as they are", 'TEMPLATE """{{ .Prompt }}"""']
    elif chat.style is None:
        lines.append("# no TEMPLATE: the model's own chat template matches no gptlab style; Ollama reads the "
                     "one inside the GGUF file")
    else:
        lines.append(f'TEMPLATE """{ollama_template(chat.style, eos_token)}"""')
        if chat.style.default_system:
            lines.append(f'SYSTEM """{chat.style.default_system}"""')
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in dict.fromkeys(chat.stops) if stop]
    return "\n".join(lines) + "\n"


def write_modelfile(gguf_path: Path, chat: ExportedChat, eos_token: str) -> Path:
    """`<name>.Modelfile` beside the GGUF file, written whole."""
    path = gguf_path.with_suffix(".Modelfile")
    write_text_atomically(path, modelfile_text(gguf_path.name, chat, eos_token))
    return path
