"""The command-line reference (`docs/cli.md`), written from the parser itself, so it cannot drift
from the flags: every command, every flag, its default and its help.

    python -m gptlab.cli.reference docs/cli.md      # write it again after changing a flag

A test compares the file with what this writes and names that command when they differ.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from gptlab.cli import build_parser

REGENERATE = "python -m gptlab.cli.reference docs/cli.md"

# Settings-dataclass flags keep their default out of the namespace and say it at the end of their help
# (gptlab.cli.flags); the reference moves it to the default column with the others.
_DEFAULT_IN_HELP = re.compile(r"^(?P<help>.*) \(default: (?P<default>.*)\)$", re.DOTALL)


def cli_reference() -> str:
    """The whole reference as Markdown: an index of commands, the global flags, then one section per command."""
    parser = build_parser()
    commands = list(_commands(parser, "gptlab"))
    lines = ["# Command-line reference", "",
             f"Generated from the parser by `{REGENERATE}`; do not edit by hand. `gptlab COMMAND --help` prints "
             "the same for one command, and every command takes `-h`/`--help`.", "",
             "| command | what it does |", "|---|---|"]
    lines += [f"| [`{name}`](#{_anchor(name)}) | {_cell(help)} |" for name, help, _ in commands]
    lines += ["", "## Global flags", "", "Given before the command: `gptlab --debug generate ...`.", ""]
    lines += _flag_table(parser)
    for name, _, command in commands:
        lines += ["", f"## `{name}`", ""]
        if command.description:
            lines += [_text(command.description), ""]
        lines += [f"`{_synopsis(name, command)}`", ""]
        lines += _flag_table(command)
    return "\n".join(lines) + "\n"


def _commands(parser: argparse.ArgumentParser, prefix: str) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(full name, one-line help, parser) of every runnable command, nested groups (`finetune`) walked in order."""
    for group in _subcommand_actions(parser):
        helps = {choice.dest: choice.help or "" for choice in group._choices_actions}
        for name, command in group.choices.items():
            full = f"{prefix} {name}"
            if _subcommand_actions(command):
                yield from _commands(command, full)
            else:
                yield full, helps.get(name, ""), command


def _subcommand_actions(parser: argparse.ArgumentParser) -> list[argparse._SubParsersAction]:
    return [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]


def _documented(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The actions a user types, without help (said once above), hidden flags or subcommand groups."""
    return [action for action in parser._actions
            if action.help != argparse.SUPPRESS and not isinstance(action, (argparse._HelpAction,
                                                                            argparse._SubParsersAction))]


def _synopsis(name: str, parser: argparse.ArgumentParser) -> str:
    positionals = [_value(action) for action in _documented(parser) if not action.option_strings]
    has_flags = any(action.option_strings for action in _documented(parser))
    return " ".join([name, *(["[flags]"] if has_flags else []), *positionals])


def _flag_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| flag | default | help |", "|---|---|---|"]
    for action in _documented(parser):
        help, default = _help_and_default(action)
        rows.append(f"| `{_cell(_names(action))}` | {_cell(default)} | {_cell(help)} |")
    return rows


def _names(action: argparse.Action) -> str:
    """How the flag is typed: `--top-k K`, `--dtype {auto,float32}`, `--mask-prompt, --no-mask-prompt`."""
    if not action.option_strings:
        return _value(action)
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    return ", ".join(f"{option} {_value(action)}" for option in action.option_strings)


def _value(action: argparse.Action) -> str:
    """The value a flag (or a positional argument) takes, as argparse's usage writes it."""
    if action.choices is not None and not isinstance(action.choices, dict):
        single = "{" + ",".join(str(choice) for choice in action.choices) + "}"
    else:
        metavar = action.metavar
        single = metavar if isinstance(metavar, str) else (action.dest.upper() if action.option_strings
                                                            else action.dest)
    return {"?": f"[{single}]", "*": f"[{single} ...]", "+": f"{single} [{single} ...]"}.get(
        action.nargs if isinstance(action.nargs, str) else "", single)


def _help_and_default(action: argparse.Action) -> tuple[str, str]:
    help = _text(action.help or "")
    if isinstance(action, argparse._VersionAction):
        return help, ""
    if action.required and action.option_strings:
        return help, "required"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)):
        return help, "off"  # a switch is off until given (--debug's environment variable is in its help)
    if action.default is argparse.SUPPRESS:
        found = _DEFAULT_IN_HELP.match(help)
        help, default = (found["help"], found["default"]) if found else (help, "")
    else:
        default = _shown(action.default)
    if isinstance(action, argparse.BooleanOptionalAction):
        default = {"True": "on", "False": "off"}.get(default, default)
    return help, default


def _shown(default: object) -> str:
    if default is None or default == []:
        return ""
    if isinstance(default, (list, tuple)):
        return " ".join(str(item) for item in default)
    return str(default)


def _text(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    """Text in a Markdown table cell: a `|` would end the cell."""
    return text.replace("|", "\\|")


def _anchor(heading: str) -> str:
    """The id GitHub gives a heading (`gptlab finetune dpo` -> `gptlab-finetune-dpo`)."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description="Write the command-line reference (Markdown) from the parser.")
    args.add_argument("out", nargs="?", type=Path, help="file to write (default: standard output)")
    out = args.parse_args(argv).out
    text = cli_reference()
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
