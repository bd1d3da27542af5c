"""`gptlab evaluate`: lm-evaluation-harness tasks on any model gptlab loads, in this process."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from types import ModuleType

from gptlab.cli.common import load, model_command

DESCRIPTION = ("Run lm-evaluation-harness tasks (multiple choice by log-likelihood, perplexity, generation with "
               "stop strings) on a model, in this process: any model --model names, quantized ones too. Results "
               "are lm-eval's own: a table here, its JSON with --json, its files under --output. Needs the eval "
               "extra (pip install 'gptlab[eval]'). A task's data comes from the Hugging Face hub or its cache; "
               "local task YAML files (--include-path) may read local files (dataset_path: json, "
               "dataset_kwargs: {data_files: ...}, a path relative to the working folder) and run offline.")


def add_evaluate(commands: argparse._SubParsersAction) -> None:
    p = model_command(commands, "evaluate", cmd_evaluate, seed=0, description=DESCRIPTION,
                      help="score a model on lm-evaluation-harness tasks (in-process)")
    p.add_argument("--tasks", required=True, metavar="T1,T2",
                   help="lm-eval task, group or tag names, comma-separated (e.g. hellaswag,arc_easy)")
    p.add_argument("--include-path", type=Path, default=None, metavar="DIR",
                   help="a folder of your own task YAML files, read besides lm-eval's")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N examples of each task")
    p.add_argument("--num-fewshot", type=int, default=None, metavar="K",
                   help="examples shown before each question (default: the task's own, usually 0)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B",
                   help="sequences scored in one forward pass (default 8; generation runs one at a time)")
    p.add_argument("--output", type=Path, default=None, metavar="DIR",
                   help="write lm-eval's results JSON and each task's examples (prompts, answers, scores) here")
    p.add_argument("--json", action="store_true", help="print lm-eval's results as one JSON object")


def cmd_evaluate(args: argparse.Namespace) -> int:
    harness = _harness()
    tasks = tuple(name.strip() for name in args.tasks.split(",") if name.strip())
    if not tasks:
        raise ValueError("--tasks names no task; give lm-eval task names separated by commas")
    for flag, value, least in (("--limit", args.limit, 0), ("--num-fewshot", args.num_fewshot, 0),
                               ("--batch-size", args.batch_size, 1)):
        if value is not None and value < least:
            raise ValueError(f"{flag} must be {least} or more, got {value}")
    settings = harness.HarnessSettings(tasks, args.include_path, args.limit, args.num_fewshot)
    manager = harness.task_manager(settings)  # an unknown task fails here, before the model loads
    if not args.verbose:  # lm-eval reports every step at INFO; its warnings stay
        logging.getLogger("lm_eval").setLevel(logging.WARNING)
    lm = harness.GptlabLM(load(args), batch_size=args.batch_size)
    results = harness.evaluate(lm, settings, manager, args.model, args.output)
    if args.json:
        print(harness.results_json(results))
    else:
        print(harness.results_table(results))
    return 0


def _harness() -> ModuleType:
    """gptlab's lm-eval adapter, imported only here: the eval extra is optional."""
    try:
        from gptlab.evaluation import harness
    except ModuleNotFoundError as err:
        if err.name is None or err.name.split(".")[0] != "lm_eval":
            raise
        raise ValueError("gptlab evaluate needs lm-evaluation-harness: pip install 'gptlab[eval]'") from err
    return harness
