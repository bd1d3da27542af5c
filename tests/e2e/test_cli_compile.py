"""`--compile`: the one-token decode step through torch.compile, as a user turns it on."""

from __future__ import annotations

import json

import pytest
import torch

from gptlab.checkpoint.native import save_checkpoint
from gptlab.model import GPT
from gptlab.models import preset_config
from gptlab.tokenizer import GPT2Tokenizer

from .test_cli_generate import run


@pytest.mark.slow  # compiling takes about a minute on 2 busy cores
def test_generate_with_compile_answers_as_without_and_reports_compile_time(tmp_path):
    torch.manual_seed(0)
    tiny = save_checkpoint(GPT(preset_config("gpt-tiny")).eval(), GPT2Tokenizer(), tmp_path / "tiny")
    args = ("generate", "--model", str(tiny), "--prompt", "Every effort moves", "--max-new-tokens", "20",
            "--temperature", "0", "--json")
    eager, compiled = run(*args), run(*args, "--compile")
    assert eager.returncode == 0 and compiled.returncode == 0, compiled.stderr
    assert "compiled the one-token decode step (1 row) in" in compiled.stderr
    assert json.loads(compiled.stdout)["completion_ids"] == json.loads(eager.stdout)["completion_ids"]
