"""`gptlab download` and `gptlab convert`: OpenAI's GPT-2 files on disk, and any model in another format."""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from gptlab.checkpoint.crc32c import using_fast_crc32c
from gptlab.checkpoint.gguf_export import QUANTS, export_gguf
from gptlab.checkpoint.hf import export_hf_folder
from gptlab.checkpoint.manifest import check_listed
from gptlab.checkpoint.model_card import CardFacts, model_card
from gptlab.checkpoint.native import save_checkpoint
from gptlab.cli.common import add_device_flags, load
from gptlab.cli.progress import DownloadBars
from gptlab.download import SIZES, SOURCES, download_gpt2, gpt2_size
from gptlab.files import read_json, write_text_atomically
from gptlab.loading import LoadedModel, checkpoint_of, load_model
from gptlab.modelfile import exported_chat, write_modelfile
from gptlab.prompts import TEMPLATE

log = logging.getLogger("gptlab")
FORMATS = ("tf", "safetensors")
TARGETS = ("gptlab", "hf", "gguf")


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
        "convert", help="write any model gptlab reads as a gptlab checkpoint, a Hugging Face folder or a GGUF file",
        description="Read a model as --model does (an OpenAI GPT-2 folder, the book's .pth, a Hugging Face folder, "
                    "a .gguf file, a gptlab checkpoint or a preset) and write it to DST: a gptlab checkpoint folder "
                    "(model.safetensors + config.json, quick to load), a Hugging Face folder that transformers' "
                    "from_pretrained loads, or a GGUF file for llama.cpp, LM Studio and Ollama (with "
                    "DST's name.Modelfile beside it: `ollama create NAME -f name.Modelfile`). A LoRA run "
                    "exports merged.")
    p.add_argument("model", metavar="SRC", help="the model to read")
    p.add_argument("dest", metavar="DST", type=Path,
                   help="the folder to write (new or empty); with --to gguf, the new .gguf file")
    p.add_argument("--to", choices=TARGETS, default="gptlab",
                   help="gptlab: our checkpoint folder (default); hf: a Hugging Face folder of the model's "
                        "family (GPT-2, Llama, Qwen, ...); gguf: one llama.cpp file (every family gptlab reads) "
                        "with its tokenizer and chat template, and an Ollama Modelfile")
    p.add_argument("--quant", choices=QUANTS, default="f16",
                   help="with --to gguf: the weights' type: f32, f16 (default, as llama.cpp's converter), bf16, "
                        "or llama.cpp's blocks of 32 with one scale each, q8_0 (near-lossless) and q4_0 "
                        "(embeddings kept q8_0); norms stay f32")
    p.add_argument("--seed", type=int, default=0, help="seed of a preset's random weights (default 0)")
    add_device_flags(p, device="cpu")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    if args.to == "gguf":
        return _convert_gguf(args)
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
        write_text_atomically(folder / "README.md", model_card(_card_facts(args.model, loaded, folder)))
        print(f"wrote the Hugging Face folder {folder} ({_files(folder)}) from {loaded.description}")
    else:
        folder = save_checkpoint(loaded.model, loaded.tokenizer, args.dest, loaded.meta)
        print(f"wrote the gptlab checkpoint {folder} ({_files(folder)}) from {loaded.description}")
    return 0


def _card_facts(source: str, loaded: LoadedModel, folder: Path) -> CardFacts:
    """What the model card of `folder` says: the model, and the run that trained it (its config and summary)."""
    run_folder = Path(source).expanduser()
    summary = run_folder / "summary.json"
    results = None
    if run_folder.is_dir() and checkpoint_of(run_folder) != run_folder and summary.is_file():
        check_listed(summary)
        results = read_json(summary)
    return CardFacts(name=folder.name, source=source, description=loaded.description, config=loaded.model.config,
                     parameters=loaded.model.num_parameters(), run=loaded.meta.run, results=results,
                     lora=loaded.meta.lora is not None)


def _convert_gguf(args: argparse.Namespace) -> int:
    """`convert --to gguf`: the file, and the Modelfile that runs it in Ollama."""
    if args.dest.suffix != ".gguf":
        raise ValueError(f"{args.dest}: --to gguf writes one .gguf file; name it NAME.gguf")
    if args.dest.exists():
        raise ValueError(f"{args.dest} already exists; convert writes a new file, so remove it or choose another")
    loaded: LoadedModel = load(args)
    logging.getLogger("gguf").setLevel(logging.WARNING)  # its writer's notes name our temporary file
    if loaded.meta.quantization is not None:
        raise ValueError(f"{loaded.description} is quantized ({loaded.meta.quantization.scheme}), and gptlab writes "
                         "no GGUF type from its scales (int8 scales whole rows; GGUF's q8_0 and q4_0 scale blocks of "
                         "32): convert the float model with --quant q8_0 or q4_0")
    chat = exported_chat(loaded.meta, loaded.tokenizer)
    written = export_gguf(loaded.model, args.dest, loaded.tokenizer, chat.template, args.quant)
    eos = loaded.tokenizer.decode([loaded.tokenizer.eos_id]) if loaded.tokenizer.eos_id is not None else ""
    modelfile = write_modelfile(written.path, chat, eos)
    types = ", ".join(f"{count} {kind}" for kind, count in sorted(written.tensor_types.items()))
    print(f"wrote the GGUF file {written.path} ({written.architecture}; tensors: {types}) from {loaded.description}")
    print(f"and {modelfile}: ollama create {shlex.quote(written.path.stem)} -f {shlex.quote(str(modelfile))}")
    return 0


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{value!r} is not an http:// or https:// address")
    return value


def _files(folder: Path) -> str:
    return ", ".join(sorted(path.name for path in folder.iterdir()))
