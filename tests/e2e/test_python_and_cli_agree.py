"""The Python API and the command line, given the same settings, run the same run: same config.json."""

from __future__ import annotations

import json
from pathlib import Path

from e2e.commands import gptlab
from gptlab import generate, load_model
from gptlab.cli import main
from gptlab.generation import GenerationSettings
from gptlab.training.classify import ClassifyConfig
from gptlab.training.loop import TrainSettings
from gptlab.training.sft import SFTConfig


def cli_run(*args: str) -> None:
    done = gptlab(*args)
    assert done.returncode == 0, done.stderr[-2000:]


def saved_config(run: Path) -> dict:
    config = json.loads((run / "config.json").read_text())
    assert config.pop("out") == str(run)
    return config


def test_classify_with_pretraining_on_the_texts(tmp_path):
    python, cli = tmp_path / "python", tmp_path / "cli"
    ClassifyConfig(data="sms-spam", out=str(python), model="gpt-tiny", pretrain_on_texts=True,
                   pretrain=TrainSettings(max_steps=1), train=TrainSettings(max_steps=1)).run()
    cli_run("finetune", "classify", "--data", "sms-spam", "--out", str(cli), "--model", "gpt-tiny",
            "--pretrain-on-texts", "--pretrain-max-steps", "1", "--max-steps", "1")
    assert saved_config(python) == saved_config(cli)
    assert saved_config(cli)["train"]["lr"] == 3e-4  # the recipe of --pretrain-on-texts, in both
    assert saved_config(cli)["pretrain"]["lr"] == 1e-3  # and the recipe of its language-model pretraining


def test_instruct(tmp_path, sixteen_records):
    data = tmp_path / "records.json"
    data.write_text(json.dumps(sixteen_records))
    python, cli = tmp_path / "python", tmp_path / "cli"
    SFTConfig(data=str(data), out=str(python), model="gpt-tiny", response_tokens=0,
              train=TrainSettings(max_steps=1, lr=1e-3)).run()
    cli_run("finetune", "instruct", "--data", str(data), "--out", str(cli), "--model", "gpt-tiny",
            "--response-tokens", "0", "--max-steps", "1", "--lr", "1e-3")
    assert saved_config(python) == saved_config(cli)
    assert saved_config(cli)["train"]["min_lr"] == 5e-5  # the book's, not lr / 10


def test_generate_and_the_python_api_share_their_defaults(capsys):
    """No sampling flag and no setting: the same 64 tokens at temperature 1 (same seed, same text)."""
    assert main(["generate", "--model", "gpt-tiny", "--prompt", "Every effort moves", "--seed", "3", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    python = generate(load_model("gpt-tiny", seed=3), "Every effort moves", seed=3)
    assert cli["completion"] == python
    assert len(cli["completion_ids"]) == GenerationSettings().max_new_tokens == 64
