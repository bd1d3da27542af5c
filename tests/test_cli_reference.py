"""docs/cli.md is the parser written out: it names every command and flag, and a changed flag makes it stale."""

from __future__ import annotations

import argparse
from pathlib import Path

from gptlab.cli import build_parser
from gptlab.cli.reference import REGENERATE, cli_reference, main

REPO = Path(__file__).resolve().parents[1]


def _every_parser(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                yield from _every_parser(command)


def test_docs_cli_md_is_current():
    written = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert written == cli_reference(), f"docs/cli.md is stale: run `.venv/bin/{REGENERATE}` and commit it"


def test_the_reference_names_every_command_and_every_visible_flag():
    text = cli_reference()
    for command in ("gptlab info", "gptlab finetune classify", "gptlab finetune dpo", "gptlab tokenizer train",
                    "gptlab serve", "gptlab convert"):
        assert f"## `{command}`" in text
    for parser in _every_parser(build_parser()):
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}" in text or f", {option}" in text, option


def test_defaults_and_help_come_from_the_parser():
    text = cli_reference()
    # a plain flag, a settings-dataclass flag (default moved out of its help), a switch, a choice
    assert "| `--batch-size BATCH_SIZE` | 8 | windows per forward pass (default 8) |" in text
    assert "| `--temperature TEMPERATURE` | 1.0 | sampling temperature; 0 = greedy (argmax), as in the OpenAI API; " \
           "from 0 to 2 |" in text  # a setting's range joins its help
    assert "| `--lr LR` | 5e-05 |" in text
    assert "| `--resume` | off |" in text
    assert "`--dtype {auto,float32,bfloat16,float16}` | auto |" in text


def test_the_module_writes_the_file(tmp_path):
    out = tmp_path / "cli.md"
    assert main([str(out)]) == 0
    assert out.read_text(encoding="utf-8") == cli_reference()
