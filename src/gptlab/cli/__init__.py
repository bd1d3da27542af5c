"""`gptlab <command>`: flags in, library calls out.

Each command's parser is built by one small function in the module of its group (`generate`,
`instruct`, `classify`, `judge`, `train`, `weights`); the trainers' flags come from the task configs
(`flags`). Here: the top-level parser, logging, the error boundary, and leaving torchrun.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

import torch

from gptlab import __version__
from gptlab.cli import classify, generate, instruct, judge, train, weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptlab", description="Build, load, train and run GPT-2-family language models.",
    )
    parser.add_argument("--version", action="version", version=f"gptlab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (generate.add_info, generate.add_generate, train.add_pretrain, train.add_finetune,
                instruct.add_respond, instruct.add_chat, instruct.add_serve, generate.add_perplexity,
                judge.add_judge, classify.add_classify, weights.add_download, weights.add_convert):
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    torch.set_grad_enabled(False)
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        code = handler(args)
    except (ValueError, OSError) as err:
        if args.verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        code = 130
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _leave_torchrun_worker(code)
    return code


def _leave_torchrun_worker(code: int) -> None:
    """End a `torchrun` worker without interpreter teardown, where Gloo's threads can abort a finished
    run (SIGABRT, "terminate called without an active exception"; seen in CI). All files are written."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
