"""`gptlab pretrain` and `gptlab finetune classify|instruct|dpo`: flags (over a run's `config.json`)
become the task's config, which runs itself; the terminal shows its progress."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from gptlab.checkpoint.weights import read_json
from gptlab.cli.flags import add_dataclass_flags, flag_values, overlay
from gptlab.cli.progress import TrainingDisplay, draw_plots, print_report
from gptlab.devices import pick_device
from gptlab.evaluation.responses import RESPONSES_FILE
from gptlab.runtime import keep_large_allocations_on_heap
from gptlab.training.loop import is_main_process
from gptlab.training.registry import TASKS
from gptlab.training.runs import RunConfig

TRAINERS = {  # task: (one line for `gptlab --help`, the command's description)
    "pretrain": (
        "pretrain a GPT on text files or built-in data sets (checkpoints, resume, plots)",
        "Pretrain a GPT with next-token prediction. Writes runs/<name>/ with config.json, metrics.jsonl, "
        "loss.png, lr.png, checkpoints/last and checkpoints/best, summary.json. Run under "
        "`torchrun --nproc_per_node=N` for data-parallel training."),
    "classify": (
        "train a text classifier (SMS spam or any labelled CSV/TSV/JSONL)",
        "Swap the LM head for a class head and fine-tune it on labelled text. Writes runs/<name>/ with the "
        "splits, metrics, plots, checkpoints and summary.json (accuracy, F1 and confusion on train/val/test, "
        "and a TF-IDF baseline). The optimiser defaults are the book's; after --pretrain-on-texts they are "
        "that recipe's (lr 3e-4, min-lr 3e-5, 400 steps, 50 warmup steps, 20 eval batches)."),
    "instruct": (
        "instruction fine-tuning (SFT) on instruction/input/output records",
        "Teach a model to follow instructions: train on prompt + response with the prompt masked, then answer "
        f"every test record. Writes runs/<name>/ with the train/test/val splits, metrics, loss.png, checkpoints, "
        f"{RESPONSES_FILE} and summary.json. The optimiser defaults are the book's, for pretrained weights; "
        "a random preset needs a higher --lr (e.g. 1e-3)."),
    "dpo": (
        "preference tuning (DPO) of an instruction-tuned model on chosen/rejected pairs",
        "Direct Preference Optimization, as in the book's chapter 7 bonus: make an instruction-tuned model "
        "(--model, e.g. a finetune instruct run) prefer each record's chosen response over its rejected one, "
        "relative to a frozen copy of its starting weights, then answer every test record. Evaluations report "
        "the DPO loss and, on training and validation pairs, the reward accuracy (share of pairs whose chosen "
        "reward is higher) and mean reward margin; best/ is the lowest validation DPO loss. Writes "
        f"runs/<name>/ with the splits, metrics, loss.png, reward_margins.png, checkpoints, {RESPONSES_FILE} "
        "and summary.json. The optimiser defaults are the book's, for GPT-2 355M after finetune instruct; "
        "--train-layers lora trains adapters only."),
}


def add_pretrain(commands: argparse._SubParsersAction) -> None:
    _add_trainer(commands, "pretrain")


def add_finetune(commands: argparse._SubParsersAction) -> None:
    finetune = commands.add_parser("finetune", help="fine-tune a model for a task (classify, instruct, dpo)",
                                   description="Fine-tune a model for a task.")
    tasks = finetune.add_subparsers(dest="task", metavar="TASK", required=True)
    for name in ("classify", "instruct", "dpo"):
        _add_trainer(tasks, name)


def _add_trainer(commands: argparse._SubParsersAction, name: str) -> None:
    """A training command: --config/--resume plus one flag per setting of the task."""
    help, description = TRAINERS[name]
    parser = commands.add_parser(name, help=help, description=description)
    parser.add_argument("--config", default=None, help="a run's config.json to replay (flags given override it)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last")
    config_class = TASKS[name]
    add_dataclass_flags(parser, config_class, shown={"train": config_class.RECIPE})
    parser.set_defaults(func=cmd_train, trainer=name, trains=True)


def command_of(name: str) -> str:
    """How a user types the task's command, for messages."""
    return "gptlab pretrain" if name == "pretrain" else f"gptlab finetune {name}"


def task_config(args: argparse.Namespace) -> RunConfig:
    """The task's config: a --config file (or, with --resume, the run's own), then the flags given."""
    config_class, command = TASKS[args.trainer], command_of(args.trainer)
    given = flag_values(args, config_class)
    config_file = Path(args.config) if args.config else None
    if config_file is None and args.resume:
        out_field = next(f for f in dataclasses.fields(config_class) if f.name == "out")
        own = Path(given.get("out", out_field.default)) / "config.json"
        config_file = own if own.is_file() else None
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
    return print_report(config, summary, command_of(args.trainer))
