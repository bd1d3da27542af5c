"""Task configs resolve their own recipe, so Python and the command line describe the same run."""

import argparse
import dataclasses
import json

import pytest

from gptlab.cli import build_parser, main
from gptlab.cli.train import task_config
from gptlab.fields import setting
from gptlab.lora import LoRASettings
from gptlab.training.classify import ClassifyConfig
from gptlab.training.loop import GENERIC, TrainSettings
from gptlab.training.pretrain import PretrainConfig
from gptlab.training.registry import TASKS
from gptlab.training.reports import OnEvent, RunSummary
from gptlab.training.runs import RunConfig
from gptlab.training.sft import SFTConfig


def from_flags(*argv: str) -> RunConfig:
    return task_config(build_parser().parse_args(list(argv)))


def test_pretrain_on_texts_takes_its_recipe_in_python_as_on_the_command_line():
    python = ClassifyConfig(data="sms-spam", pretrain_on_texts=True)
    assert (python.train.lr, python.train.min_lr, python.train.max_steps, python.train.warmup_steps) == (
        3e-4, 3e-5, 400, 50)
    assert (python.train_layers, python.dropout) == ("all", 0.2)
    cli = from_flags("finetune", "classify", "--data", "sms-spam", "--pretrain-on-texts")
    assert cli.to_dict() == python.to_dict()


def test_the_pretraining_of_pretrain_on_texts_takes_its_recipe_from_flags_and_records_it():
    config = from_flags("finetune", "classify", "--data", "sms-spam", "--pretrain-on-texts", "--pretrain-max-steps",
                        "30", "--pretrain-lr", "5e-4", "--seed", "7")
    recorded = json.loads(json.dumps(config.to_dict()))["pretrain"]
    assert (recorded["max_steps"], recorded["lr"], recorded["min_lr"], recorded["warmup_steps"],
            recorded["eval_every"], recorded["seed"]) == (30, 5e-4, 1e-4, 3, 10, 7)  # the recipe for 30 steps
    assert ClassifyConfig.from_dict(config.to_dict()) == config  # replayable as recorded
    assert ClassifyConfig(data="sms-spam").pretrain == TrainSettings()  # nothing recorded where nothing runs


def test_registering_a_task_creates_its_command(monkeypatch, capsys, tmp_path):
    @dataclasses.dataclass
    class EchoConfig(RunConfig, task="echo"):
        SUMMARY = "repeat the data (a task registered by a test)"
        DESCRIPTION = "A throwaway task."

        data: str = setting("text to repeat")
        out: str = setting("run folder", "runs/echo")
        train: TrainSettings = setting("optimisation", factory=TrainSettings)

        def run(self, resume: bool = False, on_event: OnEvent | None = None) -> RunSummary:
            raise ValueError(f"echo: {self.data} at lr {self.train.lr}")

    monkeypatch.setitem(TASKS, "echo", EchoConfig)
    assert main(["finetune", "echo", "--data", "hello", "--lr", "0.5", "--out", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: echo: hello at lr 0.5"
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    assert "echo" in capsys.readouterr().out and EchoConfig.COMMAND == "gptlab finetune echo"
    book = ClassifyConfig(data="sms-spam")
    assert (book.train.lr, book.train.max_steps, book.train_layers, book.dropout) == (5e-5, 650, "last", None)


def test_given_training_values_override_the_recipe_field_by_field():
    python = SFTConfig(data="d.json", train=TrainSettings(lr=1e-3, max_steps=5))
    assert python.train == dataclasses.replace(SFTConfig.RECIPE, lr=1e-3, max_steps=5)
    assert from_flags("finetune", "instruct", "--data", "d.json", "--lr", "1e-3", "--max-steps", "5").to_dict() == \
        python.to_dict()
    assert PretrainConfig(data=["the-verdict"]).train == GENERIC  # pretraining's recipe is the generic one


def test_config_json_round_trips_and_replays_with_the_flags_given_on_top(tmp_path):
    config = ClassifyConfig(data="sms-spam", train_layers="lora", lora=LoRASettings(rank=4))
    saved = json.loads(json.dumps(config.to_dict()))
    assert saved["lora"]["rank"] == 4 and ClassifyConfig.from_dict(saved) == config
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved))
    replay = from_flags("finetune", "classify", "--config", str(path), "--lora-alpha", "8", "--lr", "1e-3")
    assert replay.lora == LoRASettings(rank=4, alpha=8.0)
    assert (replay.train.lr, replay.train.max_steps, replay.train_layers) == (1e-3, 650, "lora")


def test_a_config_of_another_task_or_an_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="is a dpo run's config, not a classify one"):
        ClassifyConfig.from_dict({"task": "dpo", "data": "x"})
    with pytest.raises(ValueError, match="unknown setting 'lora_rank'"):
        ClassifyConfig.from_dict({"data": "x", "lora_rank": 4})
    with pytest.raises(ValueError, match="config.json, train: unknown setting 'learning_rate'"):
        ClassifyConfig.from_dict({"data": "x", "train": {"learning_rate": 1e-3}})
    with pytest.raises(ValueError, match="gptlab pretrain needs --data or --config"):
        from_flags("pretrain")


def subcommand(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    for name in names:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


@pytest.mark.parametrize("name", list(TASKS))
def test_every_trainer_flag_is_explained_and_shows_the_recipe(name):
    parser = subcommand(build_parser(), *(["pretrain"] if name == "pretrain" else ["finetune", name]))
    flags = {action.option_strings[-1]: action.help for action in parser._actions if action.option_strings}
    assert all(flags.values()), [flag for flag, text in flags.items() if not text]
    assert f"(default: {TASKS[name].RECIPE.lr})" in flags["--lr"]
    assert "--lora-rank" in flags or name == "pretrain"


@pytest.mark.parametrize("values, message", [
    ({"train": {"lr": "fast"}}, "run.json, train, lr: expected a number, got 'fast'"),
    ({"train": {"max_steps": 10.5}}, "run.json, train, max_steps: expected a whole number, got 10.5"),
    ({"train": {"compile": "yes"}}, "run.json, train, compile: expected true or false, got 'yes'"),
    ({"train": {"beta2": 1.5}}, "run.json, train: beta2 must be in [0, 1), got 1.5"),
    ({"train": {"warmup_steps": -1}}, "run.json, train: warmup_steps must be >= 0, got -1"),
    ({"train": 3}, "run.json, train: expected a JSON object of settings, got 3"),
    ({"lora": {"targets": "attn.c_attn"}}, "run.json, lora, targets: expected a list, got 'attn.c_attn'"),
    ({"lora": {"rank": 0}}, "run.json, lora: LoRA rank must be >= 1, got 0"),
    ({"val_fraction": None}, "run.json, val_fraction: expected a number, got None"),
])
def test_a_config_value_of_the_wrong_type_or_range_names_the_file_and_setting(values, message):
    with pytest.raises(ValueError) as caught:
        ClassifyConfig.from_dict({"data": "x", **values}, where="run.json")
    assert str(caught.value) == message


def test_a_whole_number_reads_as_a_float_and_a_list_as_a_tuple():
    config = ClassifyConfig.from_dict({"data": "x", "train": {"lr": 1}, "lora": {"targets": ["attn.c_attn"]}})
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float) and config.lora.targets == ("attn.c_attn",)
