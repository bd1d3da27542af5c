"""`gptlab chat`: a terminal conversation with an instruction-tuned model, streamed token by token.

This is an edge of the package, like `cli/`: it reads the keyboard and prints.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from gptlab.generation import GenerationSettings
from gptlab.loading import LoadedModel
from gptlab.prompts import Conversation, Style

HELP = ('Type a message and press Enter. End a line with \\ to continue on the next; put """ on a line '
        'of its own before and after pasted text.\n'
        "/settings [name=value ...]  show or change temperature, top_k, top_p, max_new_tokens, seed\n"
        "/reset                      forget the conversation so far\n"
        "/quit                       leave (or Ctrl-D); Ctrl-C stops an answer")
# A conversation's defaults (`gptlab chat`): answers run longer than a continuation (`GenerationSettings`'
# 64 tokens, the Python API's and `gptlab generate`'s), sampled a little cooler, among the 50 likeliest.
CHAT_SETTINGS = GenerationSettings(max_new_tokens=256, temperature=0.7, top_k=50)
SETTABLE: dict[str, Callable[[str], object]] = {
    "temperature": float, "top_k": int, "top_p": float, "max_new_tokens": int, "seed": int,
}


def change_settings(settings: GenerationSettings, assignments: list[str]) -> GenerationSettings:
    """Settings with `name=value` changes applied (`none` clears top_k/top_p/seed); validated."""
    changes: dict[str, Any] = {}  # checked by GenerationSettings
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or name not in SETTABLE:
            raise ValueError(f"{assignment!r}: expected name=value with name one of {', '.join(SETTABLE)}")
        try:
            changes[name] = None if value.lower() == "none" else SETTABLE[name](value)
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not a number") from None
    return dataclasses.replace(settings, **changes)


def describe(settings: GenerationSettings) -> str:
    return " ".join(f"{name}={getattr(settings, name)}" for name in SETTABLE)


def read_message(read: Callable[[str], str]) -> str:
    """One message: a line, lines joined by a trailing backslash, or a block between `\"\"\"` lines."""
    first = read(">>> ")
    if first.strip() == '"""':
        lines = []
        while (line := read("... ")).strip() != '"""':
            lines.append(line)
        return "\n".join(lines)
    lines = [first]
    while lines[-1].endswith("\\"):
        lines[-1] = lines[-1][:-1]
        lines.append(read("... "))
    return "\n".join(lines)


def read_line(prompt: str) -> str:
    """`input`, echoing the line when stdin is not a terminal: piped questions (as `make demo` asks
    them) then show in the transcript before their answers."""
    line = input(prompt)
    if not sys.stdin.isatty():
        print(line)
    return line


def chat(loaded: LoadedModel, style: Style, settings: GenerationSettings,
         read: Callable[[str], str] = read_line) -> int:
    """The REPL: read a message or a command, stream the answer; returns the exit code."""
    conversation = Conversation(loaded.tokenizer, style, loaded.model.config.context_length)
    print(f"Chatting with {loaded.description} ({style.name} prompts). {describe(settings)}\n{HELP}")
    while True:
        try:
            message = read_message(read).strip()
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print("\n(Ctrl-D or /quit to leave)")
            continue
        if not message:
            continue
        command, *arguments = message.split()
        if command in ("/quit", "/exit"):
            return 0
        if command == "/reset":
            conversation.turns.clear()
            print("(conversation forgotten)")
        elif command == "/settings":
            try:
                settings = change_settings(settings, arguments)
            except ValueError as err:
                print(f"error: {err}")
            print(describe(settings))
        elif command.startswith("/"):
            print(f"unknown command {command}\n{HELP}")
        else:
            _answer(loaded, conversation, message, settings)


def _answer(loaded: LoadedModel, conversation: Conversation, message: str, settings: GenerationSettings) -> None:
    """Stream the model's answer; a finished answer joins the conversation, one stopped by Ctrl-C does not."""
    pieces = []
    try:
        for piece in conversation.completion(loaded.model, message, settings):
            pieces.append(piece)
            print(piece, end="", flush=True)
    except KeyboardInterrupt:
        print(" [stopped]")
        return
    print()
    conversation.add(message, "".join(pieces).strip())
