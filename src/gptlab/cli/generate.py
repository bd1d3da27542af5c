"""`gptlab info`, `gptlab generate` and `gptlab perplexity`: a model as a language model."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from gptlab.checkpoint.meta import CheckpointMeta
from gptlab.checkpoint.weights import skeleton
from gptlab.cli.common import (
    add_compile_flag,
    add_device_flags,
    add_generation_flags,
    generation_settings,
    load,
    model_command,
)
from gptlab.data.text import token_stream
from gptlab.devices import pick_device, pick_dtype
from gptlab.evaluation.perplexity import perplexity
from gptlab.generation import Completion, GenerationSettings, compile_decode
from gptlab.loading import LoadedModel
from gptlab.models import PRESETS, preset_config
from gptlab.prompts import style_for
from gptlab.quantize import Quantization, stored_bytes
from gptlab.tokenizer import GPT2Tokenizer, document_ids

QUIT_WORDS = ("quit", "exit")


def add_info(commands: argparse._SubParsersAction) -> None:
    info = commands.add_parser("info", help="show a model's configuration, parameter count and size",
                               description="Show a model's configuration, parameter count, size and FLOPs per token: "
                                           "a preset, a gptlab checkpoint, a Hugging Face folder or hub name, an "
                                           "OpenAI GPT-2 folder (gptlab download), the book's .pth or a .gguf file.")
    info.add_argument("model", metavar="MODEL", help="preset, checkpoint folder, HF folder, OpenAI GPT-2 folder, "
                                                     "the book's .pth, .gguf file or hub name")
    add_device_flags(info, device="cpu")
    info.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    loaded = preset_shape(args) if args.model in PRESETS and not Path(args.model).exists() else load(args)
    model = loaded.model
    params = model.num_parameters()
    size_mb = stored_bytes(model) / 1e6
    quantization = loaded.meta.quantization
    template = loaded.meta.chat_template
    prompts = style_for(loaded.meta).name  # how chat, respond and serve frame messages by default
    if args.json:
        print(json.dumps({
            "model": args.model, "source": loaded.source, "config": model.config.to_dict(),
            "parameters": params, "size_mb": round(size_mb, 2),
            "quantization": dataclasses.asdict(quantization) if quantization else None,
            "flops_per_token": model.flops_per_token(), "tokenizer": loaded.tokenizer.to_dict(),
            "prompt_style": prompts, "chat_template": template.source if template else None,
        }))
        return 0
    print(f"model:        {loaded.description}")
    for key, value in model.config.to_dict().items():
        print(f"  {key:<18}{value}")
    print(f"parameters:   {params:,} ({params / 1e6:.1f}M; {model.num_parameters(non_embedding=True):,} "
          "without embeddings)")
    weights = f"{quantization.scheme} projections, the rest " if quantization else ""
    print(f"size:         {size_mb:.1f} MB ({weights}{next(model.parameters()).dtype})")
    print(f"FLOPs/token:  {model.flops_per_token() / 1e9:.3f} GFLOP forward at full context")
    print(f"tokenizer:    {loaded.tokenizer.name} (vocab {loaded.tokenizer.vocab_size:,})")
    ends = f"; answers end at ids {', '.join(map(str, template.stop_ids))}" if template else ""
    print(f"prompts:      {prompts}" + (f" (chat template of {template.source}{ends})" if template else ""))
    return 0


def preset_shape(args: argparse.Namespace) -> LoadedModel:
    """A preset's model on the meta device: its shape, counts and sizes without allocating its weights
    (a real shape such as llama-3.2-1b is gigabytes of random numbers that info would never read)."""
    quantization = Quantization(args.quantize) if args.quantize else None
    dtype = torch.bfloat16 if quantization else torch.float32
    if args.dtype not in ("auto", None):
        dtype = pick_dtype(args.dtype, pick_device(args.device))
    model = skeleton(preset_config(args.model), quantization).to(dtype)
    meta = CheckpointMeta(quantization=quantization)
    description = f"preset {args.model} (random weights: its shape only, none made)"
    return LoadedModel(model, GPT2Tokenizer(), "preset", description, meta)


GENERATE = ("Generate a continuation of a prompt with any model --model names, OpenAI's GPT-2 folders (gptlab "
            "download) and the book's .pth files included. Without --prompt, asks for prompts interactively and "
            "streams the answers.")


def add_generate(commands: argparse._SubParsersAction) -> None:
    gen = model_command(commands, "generate", cmd_generate, "generate text from a prompt (KV-cached, streaming)",
                        GENERATE)
    gen.add_argument("--prompt", default=None, help="the text to continue (omit for interactive mode)")
    add_generation_flags(gen)
    add_compile_flag(gen)
    gen.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    gen.add_argument("--json", action="store_true",
                     help='print one JSON object {"prompt", "completion", "completion_ids", "finish_reason"}')


def cmd_generate(args: argparse.Namespace) -> int:
    settings = generation_settings(args)  # before loading: a bad flag fails at once
    loaded = load(args)
    if args.compile:
        compile_decode(loaded.model)
    if args.prompt is None:
        return _interactive(loaded, settings)
    pieces = Completion(loaded.model, loaded.tokenizer, document_ids(loaded.tokenizer, args.prompt), settings)
    if args.json:
        completion = "".join(pieces)
        print(json.dumps({"prompt": args.prompt, "completion": completion, "completion_ids": pieces.ids,
                          "finish_reason": pieces.finish_reason}))
    elif args.stream:
        print(args.prompt, end="", flush=True)
        for piece in pieces:
            print(piece, end="", flush=True)
        print()
    else:
        print(args.prompt + "".join(pieces))
    return 0


def _interactive(loaded: LoadedModel, settings: GenerationSettings) -> int:
    while True:
        try:
            prompt = input("Enter a prompt (type 'quit' to exit): ")
        except EOFError:
            print()
            return 0
        if prompt.strip().lower() in QUIT_WORDS:
            return 0
        if not prompt:
            continue
        pieces = Completion(loaded.model, loaded.tokenizer, document_ids(loaded.tokenizer, prompt), settings)
        print(prompt, end="", flush=True)
        for piece in pieces:
            print(piece, end="", flush=True)
        print()


def add_perplexity(commands: argparse._SubParsersAction) -> None:
    ppl = model_command(commands, "perplexity", cmd_perplexity, seed=0,
                        help="a model's loss and perplexity on text (sliding window)",
                        description="Score every token of the text once, each window predicting only the tokens "
                                    "earlier windows did not, with at least context - stride tokens of left "
                                    "context (after the first window).")
    ppl.add_argument("--data", action="append", required=True, metavar="SOURCE",
                     help="a built-in data set (the-verdict, tinyshakespeare) or a text file; repeatable")
    ppl.add_argument("--context", type=int, default=None, help="window length (default: the model's context)")
    ppl.add_argument("--stride", type=int, default=None,
                     help="tokens between window starts (default: half the window; = window is fastest)")
    ppl.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    ppl.add_argument("--max-tokens", type=int, default=None, metavar="N", help="score only the first N tokens")
    ppl.add_argument("--json", action="store_true",
                     help='print one JSON object {"tokens", "loss", "perplexity", ...}')


def cmd_perplexity(args: argparse.Namespace) -> int:
    loaded = load(args)
    tokens = token_stream(args.data, loaded.tokenizer)[:args.max_tokens]
    context = args.context or loaded.model.config.context_length
    if context > loaded.model.config.context_length:
        raise ValueError(f"--context {context} is longer than the model's context "
                         f"({loaded.model.config.context_length})")
    stride = args.stride or max(context // 2, 1)
    result = perplexity(loaded.model, tokens, stride, args.batch_size, context)
    report = {"data": args.data, "tokens": result.tokens, "loss": round(result.loss, 6),
              "perplexity": round(result.perplexity, 4), "context": context, "stride": stride}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{', '.join(args.data)}: {result.tokens:,} tokens scored, loss {result.loss:.4f} nats/token, "
              f"perplexity {result.perplexity:.2f} (windows of {context}, stride {stride})")
    return 0
