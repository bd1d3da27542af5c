"""A model's own chat template: the Jinja program its files carry that turns chat messages into the
text the model was tuned on, rendered as `transformers`' `apply_chat_template` renders it.

Read from a Hugging Face folder (`chat_template.jinja`, else `tokenizer_config.json`'s
"chat_template") or a GGUF file (`tokenizer.chat_template`), with the special tokens the template
writes (`bos_token`, `eos_token`) and the ids that end an answer. Templates are code from the
internet, so they run in jinja2's sandbox; jinja2 is imported only when a template is used.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from gptlab.files import read_json
from gptlab.tokenizer.base import Tokenizer

ANSWER = "gptlab-answer-0b7c"  # a stand-in answer, rendered to see what a template writes after an answer
GGUF_END_IDS = ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")
GGUF_WHOLE_TOKENS = (3, 4)  # GGUF token types matched whole in text: control and user-defined


class TemplateRefused(ValueError):
    """A chat template raised while rendering (e.g. Gemma's "roles must alternate"): the conversation is bad."""


@dataclass(frozen=True)
class ChatTemplate:
    """A model's Jinja chat template, the special tokens it writes, and the ids that end an answer."""

    template: str  # the Jinja source, as the model's files hold it
    source: str  # the file it was read from, named in errors
    bos_token: str = ""  # the text the template writes for `bos_token` (e.g. "<|begin_of_text|>")
    eos_token: str = ""  # the text it writes for `eos_token`
    end_of_turn: int | None = None  # the token the template writes after an answer (answers are trained to end so)
    stop_ids: tuple[int, ...] = ()  # every id that ends an answer: end_of_turn, the tokenizer's and the files' ends

    def __post_init__(self) -> None:
        _compiled(self.template, self.source)  # a template that does not parse fails where it is read

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        """The conversation as text, as `apply_chat_template(messages, add_generation_prompt=...)` renders
        it; a template that raises (e.g. on roles that do not alternate) is a `TemplateRefused` naming why."""
        import jinja2

        try:
            return _compiled(self.template, self.source).render(
                messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token, eos_token=self.eos_token, tools=None, documents=None)
        except (jinja2.TemplateError, TypeError, ValueError, LookupError, AttributeError) as err:
            reason = getattr(err, "message", None) or str(err) or type(err).__name__
            raise TemplateRefused(f"the model's chat template ({self.source}) refused the conversation: "
                                  f"{reason}") from None

    def hf_files(self, tokenizer_config: str | None) -> dict[str, str]:
        """The template as a Hugging Face folder keeps it (name → text): `chat_template.jinja`, its tokens
        added to `tokenizer_config` (the tokenizer's own tokenizer_config.json text, if any), its end ids
        in `generation_config.json`."""
        config = json.loads(tokenizer_config) if tokenizer_config else {}
        config.update((name, text) for name, text in (("bos_token", self.bos_token), ("eos_token", self.eos_token))
                      if text)
        return {"chat_template.jinja": self.template, "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
                "generation_config.json": json.dumps({"eos_token_id": list(self.stop_ids)}, indent=2) + "\n"}


@lru_cache(maxsize=16)
def _compiled(template: str, source: str) -> Any:
    """The template compiled in a sandbox with what `transformers` gives templates; one clear line when
    it does not parse."""
    import jinja2

    try:
        return _environment().from_string(template)
    except jinja2.TemplateSyntaxError as err:
        raise ValueError(f"{source}: the chat template does not parse (line {err.lineno}: {err.message})") from None


@lru_cache(maxsize=1)
def _environment() -> Any:
    """jinja2's immutable sandbox as `transformers` sets it up: trimmed blocks, loop controls, `tojson`
    without HTML escaping, `raise_exception`, `strftime_now`, and `{% generation %}` kept as plain text."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """`{% generation %}...{% endgeneration %}` marks the answers transformers masks for training; the
        text inside renders as is."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[Generation, loopcontrols])
    environment.filters["tojson"] = tojson
    environment.globals.update(raise_exception=raise_exception,
                               strftime_now=lambda format: datetime.now().strftime(format))
    return environment


def build_template(template: str, source: str, tokenizer: Tokenizer, bos_token: str, eos_token: str,
                   end_ids: Iterable[int], whole_tokens: set[int]) -> ChatTemplate:
    """A template with the ids that end its answers: the token it writes after an answer when the
    tokenizer matches that token whole (`whole_tokens`: added or control tokens), the tokenizer's
    end-of-text, and the end ids the model's files declare (those the tokenizer has)."""
    found = ChatTemplate(template, source, bos_token, eos_token)
    end_of_turn = _end_of_turn(found, tokenizer, whole_tokens)
    ends = (end_of_turn, tokenizer.eos_id, *end_ids)
    # an id the tokenizer lacks (a config left at its class's default) ends nothing this tokenizer writes
    stop_ids = tuple(dict.fromkeys(end for end in ends if end is not None and 0 <= end < tokenizer.vocab_size))
    return ChatTemplate(template, source, bos_token, eos_token, end_of_turn, stop_ids)


def _end_of_turn(template: ChatTemplate, tokenizer: Tokenizer, whole_tokens: set[int]) -> int | None:
    """The whole token the template writes right after an assistant's answer (`<|eot_id|>`, `<|im_end|>`,
    `<end_of_turn>`, `<|end|>`...), found by rendering a stand-in answer; None when it writes none."""
    try:
        text = template.render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ANSWER}],
                               add_generation_prompt=False)
    except TemplateRefused:  # a template that wants more (tools, a system message): no end learned from it
        return None
    after = text.partition(ANSWER)[2]
    ids = tokenizer.encode(after) if after else []
    return ids[0] if ids and ids[0] in whole_tokens else None


def hf_chat_template(folder: Path, tokenizer: Tokenizer) -> ChatTemplate | None:
    """The chat template of a Hugging Face folder, None when it has none: `chat_template.jinja`, else
    tokenizer_config.json's "chat_template" (one string, or named templates of which "default" is used).
    Its tokens come from tokenizer_config.json, its end ids from generation_config.json (else config.json)."""
    config_file = folder / "tokenizer_config.json"
    config = read_json(config_file) if config_file.is_file() else {}
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        template, source = jinja_file.read_text(encoding="utf-8"), str(jinja_file)
    else:
        template, source = _default_template(config.get("chat_template"), config_file), str(config_file)
    if template is None:
        return None
    tokens = {name: _token_text(config.get(name), config_file, name) for name in ("bos_token", "eos_token")}
    ends_file = folder / "generation_config.json"
    ends_file = ends_file if ends_file.is_file() else folder / "config.json"
    end_ids = _ids(read_json(ends_file).get("eos_token_id"), ends_file) if ends_file.is_file() else []
    tokenizer_file = folder / "tokenizer.json"
    added = read_json(tokenizer_file).get("added_tokens") if tokenizer_file.is_file() else None
    whole = {token["id"] for token in added or [] if isinstance(token, dict) and isinstance(token.get("id"), int)}
    return build_template(template, source, tokenizer, tokens["bos_token"], tokens["eos_token"], end_ids, whole)


def _default_template(value: Any, source: Path) -> str | None:
    """tokenizer_config.json's "chat_template": a string, or a list of {name, template} (the "default" one)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(t, dict) and isinstance(t.get("template"), str) for t in value):
        return next((t["template"] for t in value if t.get("name") == "default"), None)
    raise ValueError(f"{source}: \"chat_template\" must be a string or a list of {{\"name\", \"template\"}} objects")


def _token_text(value: Any, source: Path, name: str) -> str:
    """A special token as tokenizer_config.json writes it: its text, or an object with its "content"."""
    value = value.get("content") if isinstance(value, dict) else value
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{source}: {name!r} must be a token's text, got {value!r}")
    return value or ""


def _ids(value: Any, source: Path) -> list[int]:
    """An `eos_token_id` as config files write it: one id, a list of ids, or nothing."""
    ids = [] if value is None else value if isinstance(value, list) else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValueError(f"{source}: \"eos_token_id\" must be a token id or a list of them, got {value!r}")
    return ids


def gguf_chat_template(value: Callable[[str], Any], source: str, tokenizer: Tokenizer) -> ChatTemplate | None:
    """The chat template of a GGUF file (`value` reads its metadata), None when it has none; its tokens
    and end ids are the file's token ids."""
    template = value("tokenizer.chat_template")
    if template is None:
        return None
    if not isinstance(template, str):
        raise ValueError(f"{source}: tokenizer.chat_template must be text")
    bos, eos = value("tokenizer.ggml.bos_token_id"), value("tokenizer.ggml.eos_token_id")
    types = value("tokenizer.ggml.token_type") or []
    whole = {i for i, kind in enumerate(types) if kind in GGUF_WHOLE_TOKENS}
    end_ids = [int(value(key)) for key in GGUF_END_IDS if value(key) is not None]
    return build_template(template, source, tokenizer, "" if bos is None else tokenizer.decode([int(bos)]),
                          "" if eos is None else tokenizer.decode([int(eos)]), end_ids, whole)
