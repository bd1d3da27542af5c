"""`gptlab <command>`: flags in, library calls out.

Each command's parser is built by one small function in the module of its group (`generate`,
`instruct`, `evaluate`, `classify`, `judge`, `tokenize`, `train`, `weights`); the trainers' flags come
from the task configs (`flags`). Here: the top-level parser, logging, the error boundary (every failure one
line; its traceback with --debug), and leaving torchrun.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import traceback
from collections.abc import Callable

import torch

from gptlab import __version__
from gptlab.cli import classify, evaluate, generate, instruct, judge, tokenize, train, weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptlab", description="Build, load, train and run GPT-2- and Llama-family language models.",
    )
    parser.add_argument("--version", action="version", version=f"gptlab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    parser.add_argument("--debug", action="store_true", default=os.environ.get("GPTLAB_DEBUG") == "1",
                        help="on an error, show its traceback (also GPTLAB_DEBUG=1)")
    parser.set_defaults(trains=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (generate.add_info, generate.add_generate, train.add_pretrain, train.add_finetune,
                instruct.add_respond, instruct.add_chat, instruct.add_serve, generate.add_perplexity,
                evaluate.add_evaluate, judge.add_judge, classify.add_classify, weights.add_download,
                weights.add_convert, tokenize.add_tokenize, tokenize.add_tokenizer):
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        with torch.inference_mode(not args.trains):  # a trainer's tensors need autograd; no other's do
            code = handler(args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        code = 130
    except Exception as err:  # the last line of defence: one line, the traceback only when asked for
        if args.debug:
            traceback.print_exc()
        print(f"error: {error_line(err, debug=args.debug)}", file=sys.stderr)
        code = 1
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


# What to do about an operating-system error, by errno; its message says what and why.
_OS_ADVICE = {errno.ENOSPC: "Free some disk space and run again (a training run goes on with --resume)",
              errno.EACCES: "Check the permissions of the file and its folder",
              errno.EPERM: "Check the permissions of the file and its folder",
              errno.EROFS: "Write to a folder on a writable disk"}


def error_line(err: BaseException, debug: bool = False) -> str:
    """One line for people: an expected failure (a bad input, a missing or unwritable file) as what,
    why and how to fix it; anything else as unexpected, with the way to its traceback."""
    if isinstance(err, OSError) and err.strerror and (err.filename or err.errno in _OS_ADVICE):
        where = f"{err.filename}: " if err.filename else ""
        advice = _OS_ADVICE.get(err.errno or 0)
        return f"{where}{err.strerror}" + (f". {advice}" if advice else "")
    if isinstance(err, (ValueError, OSError)):
        return " ".join(str(err).split()) or type(err).__name__  # our messages: one line, however written
    lines = str(err).strip().splitlines()  # torch's can run to pages: the first line says what
    text = f"unexpected {type(err).__name__}" + (f": {lines[0][:300]}" if lines else "")
    return text if debug else f"{text} (run with --debug for the traceback)"
