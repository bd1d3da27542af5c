"""`gptlab` run as a user runs it: the installed console script, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptlab.checkpoint.native import save_checkpoint
from gptlab.model import GPT
from gptlab.models import preset_config
from gptlab.tokenizer import GPT2Tokenizer
from hf_models import PROMPTS, hf_greedy, load_hf

GPTLAB = str(Path(sys.executable).parent / "gptlab")


def run(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([GPTLAB, *args], input=stdin, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = GPT(preset_config("gpt-tiny")).eval()
    return save_checkpoint(model, GPT2Tokenizer(), tmp_path_factory.mktemp("ckpt") / "tiny")


def test_help_lists_every_subcommand_with_one_line():
    out = run("--help")
    assert out.returncode == 0
    assert "info" in out.stdout and "generate" in out.stdout
    assert "show a model's configuration" in out.stdout


def test_generate_json_on_a_saved_tiny_checkpoint(tiny_checkpoint):
    out = run("generate", "--model", str(tiny_checkpoint), "--prompt", "Hello, world", "--temperature", "0",
              "--max-new-tokens", "12", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["prompt"] == "Hello, world"
    assert len(result["completion_ids"]) == 12
    assert result["completion"] == GPT2Tokenizer().decode(result["completion_ids"])
    again = json.loads(run("generate", "--model", str(tiny_checkpoint), "--prompt", "Hello, world",
                           "--temperature", "0", "--max-new-tokens", "12", "--json").stdout)
    assert again == result


def test_generate_stream_prints_prompt_and_completion(tiny_checkpoint):
    out = run("generate", "--model", str(tiny_checkpoint), "--prompt", "Once upon", "--seed", "1",
              "--top-k", "40", "--top-p", "0.9", "--max-new-tokens", "8", "--stream")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Once upon") and len(out.stdout) > len("Once upon\n")


def test_interactive_mode_answers_until_quit(tiny_checkpoint):
    out = run("generate", "--model", str(tiny_checkpoint), "--max-new-tokens", "5", "--temperature", "0",
              stdin="first prompt\nsecond prompt\nquit\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("Enter a prompt (type 'quit' to exit): ") == 3
    assert "first prompt" in out.stdout and "second prompt" in out.stdout


def test_generate_json_matches_transformers_greedy(hf_gpt2_124m):
    out = run("generate", "--model", str(hf_gpt2_124m), "--prompt", PROMPTS[1], "--temperature", "0",
              "--max-new-tokens", "32", "--json")
    assert out.returncode == 0, out.stderr
    ids = GPT2Tokenizer().encode(PROMPTS[1])
    assert json.loads(out.stdout)["completion_ids"] == hf_greedy(load_hf(hf_gpt2_124m), ids, 32)


def test_preset_says_its_weights_are_random_and_info_reports_size():
    out = run("info", "gpt-tiny")
    assert out.returncode == 0, out.stderr
    assert "random weights" in out.stdout + out.stderr
    assert "812,752" in out.stdout
    info = json.loads(run("info", "gpt2", "--json").stdout)
    assert info["parameters"] == 124_439_808 and info["size_mb"] == pytest.approx(497.8, abs=0.1)


def test_offline_and_missing_tokenizer_file_is_one_line(tmp_path):
    env = {"GPTLAB_DATA_DIR": str(tmp_path / "no-mirror"), "GPTLAB_CACHE_DIR": str(tmp_path / "cache"),
           "GPTLAB_OFFLINE": "1"}
    out = run("generate", "--model", "gpt-tiny", "--prompt", "hi", env=env)
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert "encoder.json" in lines[0] and "GPTLAB_DATA_DIR" in lines[0] and "https://" in lines[0]


def test_bad_model_folder_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    out = run("generate", "--model", str(tmp_path), "--prompt", "hi")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error:") and "config.json: not valid JSON" in out.stderr
    (tmp_path / "config.json").write_text("{}")
    assert "not a model folder" in run("info", str(tmp_path)).stderr
