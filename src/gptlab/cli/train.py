"""`gptlab pretrain` and `gptlab finetune classify|instruct|dpo`: flags (over a run's `config.json`)
become the task's config, which runs itself; the terminal shows its progress."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from gptlab.checkpoint.manifest import check_listed
from gptlab.checkpoint.weights import read_json
from gptlab.cli.flags import add_dataclass_flags, flag_values, overlay
from gptlab.cli.progress import TrainingDisplay, draw_plots, print_report
from gptlab.devices import pick_device
from gptlab.runtime import keep_large_allocations_on_heap
from gptlab.training.loop import is_main_process
from gptlab.training.registry import TASKS
from gptlab.training.runs import RunConfig


def add_pretrain(commands: argparse._SubParsersAction) -> None:
    """`gptlab pretrain`: every registered task that starts from no trained model is a command of its own."""
    for name, config_class in TASKS.items():
        if config_class.COMMAND == f"gptlab {name}":
            _add_trainer(commands, name)


def add_finetune(commands: argparse._SubParsersAction) -> None:
    """`gptlab finetune TASK`, one per registered fine-tuning task (`training/registry.py`)."""
    names = [name for name, config_class in TASKS.items() if config_class.COMMAND == f"gptlab finetune {name}"]
    finetune = commands.add_parser("finetune", help=f"fine-tune a model for a task ({', '.join(names)})",
                                   description="Fine-tune a model for a task.")
    tasks = finetune.add_subparsers(dest="task", metavar="TASK", required=True)
    for name in names:
        _add_trainer(tasks, name)


def _add_trainer(commands: argparse._SubParsersAction, name: str) -> None:
    """A training command: --config/--resume plus one flag per setting of the task."""
    config_class = TASKS[name]
    parser = commands.add_parser(name, help=config_class.SUMMARY, description=config_class.DESCRIPTION)
    parser.add_argument("--config", default=None, help="a run's config.json to replay (flags given override it)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last")
    add_dataclass_flags(parser, config_class, shown=config_class.recipes())
    parser.set_defaults(func=cmd_train, trainer=name, trains=True)


def task_config(args: argparse.Namespace) -> RunConfig:
    """The task's config: a --config file (or, with --resume, the run's own), then the flags given."""
    config_class = TASKS[args.trainer]
    command = config_class.COMMAND
    given = flag_values(args, config_class)
    config_file = Path(args.config) if args.config else None
    if config_file is None and args.resume:
        out_field = next(f for f in dataclasses.fields(config_class) if f.name == "out")
        own = Path(given.get("out", out_field.default)) / "config.json"
        config_file = own if own.is_file() else None
    if config_file is not None:
        check_listed(config_file)  # a run's config.json as the run wrote it
    values = overlay(read_json(config_file) if config_file else {}, given)
    if "data" not in values:
        raise ValueError(f"{command} needs --data or --config")
    return config_class.from_dict(values, where=str(config_file or command))


def cmd_train(args: argparse.Namespace) -> int:
    """Any trainer: the config runs itself while the terminal shows its events."""
    config = task_config(args)
    if pick_device(config.train.device).type == "cpu" and os.environ.get("GPTLAB_TUNE_MALLOC") != "0":
        keep_large_allocations_on_heap()  # about 15% faster CPU steps (runtime.py); the library leaves malloc be
    display = TrainingDisplay(config.train.max_steps, show=is_main_process())
    try:
        summary = config.run(resume=args.resume, on_event=display)
    except Exception:  # the run's record (summary.json, metrics.jsonl) is written; draw what there is
        if is_main_process():
            draw_plots(config.out)
        raise
    finally:
        display.close()
    if not is_main_process():  # under torchrun only rank 0 reports
        return 0
    return print_report(config, summary, config.COMMAND)
