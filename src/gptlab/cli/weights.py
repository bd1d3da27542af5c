"""`gptlab download` and `gptlab convert`: OpenAI's GPT-2 files on disk, and any model in another format."""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from gptlab.checkpoint.crc32c import using_fast_crc32c
from gptlab.checkpoint.hf import export_hf_folder
from gptlab.checkpoint.native import save_checkpoint
from gptlab.cli.common import add_device_flags, load
from gptlab.cli.progress import DownloadBars
from gptlab.download import SIZES, SOURCES, download_gpt2, gpt2_size
from gptlab.loading import load_model
from gptlab.prompts import TEMPLATE

log = logging.getLogger("gptlab")
FORMATS = ("tf", "safetensors")
TARGETS = ("gptlab", "hf")


DOWNLOAD = ("Download OpenAI's original GPT-2 files (checkpoint, encoder.json, hparams.json, model.ckpt.*, "
            "vocab.bpe) from OpenAI's host, else the book's backup, into DIR/SIZE: resumable, sizes and every "
            "tensor's crc32c checked. The folder is a --model for every command.")


def add_download(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("download", description=DOWNLOAD,
                            help="fetch OpenAI's GPT-2 weights (the book's gpt2/124M folders), no TensorFlow needed")
    p.add_argument("size", metavar="SIZE", help=f"{', '.join(f'gpt2-{s}' for s in SIZES)} (or {', '.join(SIZES)})")
    p.add_argument("--dir", default="models/gpt2", type=Path,
                   help="parent folder; the files land in DIR/SIZE, e.g. models/gpt2/124M (default models/gpt2)")
    p.add_argument("--format", choices=FORMATS, default="tf",
                   help="tf: OpenAI's files as they are (default); safetensors: also convert them once into a "
                        "gptlab checkpoint folder DIR/SIZE-safetensors, which loads faster")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the per-tensor crc32c check (in pure Python about 30 s for 124M; "
                        "pip install 'gptlab[tf]' makes it instant)")
    p.add_argument("--url", action="append", metavar="BASE", type=_http_url,
                   help="download from BASE/SIZE/FILE instead of OpenAI's host and the book's backup "
                        "(a mirror or a local server; repeatable, tried in order)")
    p.set_defaults(func=cmd_download)


def cmd_download(args: argparse.Namespace) -> int:
    size = gpt2_size(args.size)
    folder = args.dir / size
    if not args.no_verify and not using_fast_crc32c():
        log.info("the crc32c check at the end runs in pure Python (about 30 s for 124M, longer for larger sizes); "
                 "pip install 'gptlab[tf]' makes it instant, --no-verify skips it")
    bars = DownloadBars()
    try:
        download_gpt2(size, folder, progress=bars, verify=not args.no_verify, sources=args.url or SOURCES)
    finally:
        bars.close()
    print(f"GPT-2 {size}: OpenAI's files are in {folder}")
    model = folder
    if args.format == "safetensors":
        loaded = load_model(str(folder))
        model = save_checkpoint(loaded.model, loaded.tokenizer, folder.with_name(f"{size}-safetensors"), loaded.meta)
        print(f"converted once into the gptlab checkpoint {model}, which loads faster")
    print(f"use it: gptlab generate --model {shlex.quote(str(model))} --prompt \"Every effort moves you\"")
    return 0


def add_convert(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "convert", help="write any model gptlab reads as a gptlab checkpoint or a Hugging Face folder",
        description="Read a model as --model does (an OpenAI GPT-2 folder, the book's .pth, a Hugging Face folder, "
                    "a .gguf file, a gptlab checkpoint or a preset) and write it to a new folder DST: a gptlab "
                    "checkpoint (model.safetensors + config.json, quick to load) or a Hugging Face folder that "
                    "transformers' from_pretrained loads.")
    p.add_argument("model", metavar="SRC", help="the model to read")
    p.add_argument("dest", metavar="DST", type=Path, help="the folder to write (new or empty)")
    p.add_argument("--to", choices=TARGETS, default="gptlab",
                   help="gptlab: our checkpoint folder (default); hf: a Hugging Face folder of the model's "
                        "family (GPT-2, Llama, Qwen, ...)")
    p.add_argument("--seed", type=int, default=0, help="seed of a preset's random weights (default 0)")
    add_device_flags(p, device="cpu")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    if args.dest.exists() and (not args.dest.is_dir() or any(args.dest.iterdir())):
        raise ValueError(f"{args.dest} already exists and is not an empty folder; convert writes a new folder, "
                         "so remove it or choose another")
    loaded = load(args)
    if args.to == "hf" and loaded.meta.quantization is not None:
        raise ValueError(f"{loaded.description} is quantized and --to hf writes float weights: write it as a gptlab "
                         "checkpoint (--to gptlab, the default), or convert the float model")
    if args.to == "hf":
        answers_in_template = loaded.meta.prompt_style == TEMPLATE  # else it learned a named style: no template
        folder = export_hf_folder(loaded.model, args.dest, loaded.tokenizer,
                                  loaded.meta.chat_template if answers_in_template else None)
        print(f"wrote the Hugging Face folder {folder} ({_files(folder)}) from {loaded.description}")
    else:
        folder = save_checkpoint(loaded.model, loaded.tokenizer, args.dest, loaded.meta)
        print(f"wrote the gptlab checkpoint {folder} ({_files(folder)}) from {loaded.description}")
    return 0


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{value!r} is not an http:// or https:// address")
    return value


def _files(folder: Path) -> str:
    return ", ".join(sorted(path.name for path in folder.iterdir()))
