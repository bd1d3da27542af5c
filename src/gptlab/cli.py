"""`gptlab <command>`: thin wiring from command-line flags to the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator

import torch

from gptlab import __version__
from gptlab.checkpoint import LoadedModel, load_model
from gptlab.devices import pick_device
from gptlab.generation import GenerationSettings, generate, stream_text

log = logging.getLogger("gptlab")
QUIT_WORDS = ("quit", "exit")


def _load(args: argparse.Namespace) -> LoadedModel:
    loaded = load_model(args.model, device=pick_device(getattr(args, "device", None)), seed=args.seed or 0)
    if loaded.random_weights:
        log.warning("%s: the weights are random, so the text will be noise", loaded.description)
    return loaded


def cmd_info(args: argparse.Namespace) -> int:
    loaded = _load(args)
    model = loaded.model
    params = model.num_parameters()
    size_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    if args.json:
        print(json.dumps({
            "model": args.model, "source": loaded.source, "config": model.config.to_dict(),
            "parameters": params, "size_mb": round(size_mb, 2),
            "flops_per_token": model.flops_per_token(), "tokenizer": loaded.tokenizer.to_dict(),
        }))
        return 0
    print(f"model:        {loaded.description}")
    for key, value in model.config.to_dict().items():
        print(f"  {key:<16}{value}")
    print(f"parameters:   {params:,} ({params / 1e6:.1f}M; {model.num_parameters(non_embedding=True):,} without embeddings)")
    print(f"size:         {size_mb:.1f} MB ({next(model.parameters()).dtype})")
    print(f"FLOPs/token:  {model.flops_per_token() / 1e9:.3f} GFLOP forward at full context")
    print(f"tokenizer:    {loaded.tokenizer.name} (vocab {loaded.tokenizer.vocab_size:,})")
    return 0


def _settings(args: argparse.Namespace, loaded: LoadedModel) -> GenerationSettings:
    eos = loaded.tokenizer.eos_id
    return GenerationSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, seed=args.seed, stop_ids=(eos,) if eos is not None else (),
        stop_strings=tuple(args.stop or ()), kv_cache=not args.no_kv_cache,
    )


def _completion(loaded: LoadedModel, prompt: str, settings: GenerationSettings) -> tuple[Iterator[str], list[int]]:
    """Text pieces of the completion (lazy) and the list that collects its token ids."""
    prompt_ids = loaded.tokenizer.encode(prompt)
    if not prompt_ids:
        raise ValueError("the prompt is empty after tokenization; give at least one character")
    completion_ids: list[int] = []

    def tokens() -> Iterator[int]:
        for token in generate(loaded.model, prompt_ids, settings):
            completion_ids.append(token)
            yield token

    return stream_text(tokens(), loaded.tokenizer, settings.stop_strings), completion_ids


def cmd_generate(args: argparse.Namespace) -> int:
    loaded = _load(args)
    settings = _settings(args, loaded)
    if args.prompt is None:
        return _interactive(loaded, settings)
    pieces, ids = _completion(loaded, args.prompt, settings)
    if args.json:
        completion = "".join(pieces)
        print(json.dumps({"prompt": args.prompt, "completion": completion, "completion_ids": ids}))
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
        pieces, _ = _completion(loaded, prompt, settings)
        print(prompt, end="", flush=True)
        for piece in pieces:
            print(piece, end="", flush=True)
        print()


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="MODEL",
                   help="a preset (gpt-tiny, gpt-small, gpt2, gpt2-medium, gpt2-large, gpt2-xl: random "
                        "weights), a gptlab checkpoint folder, a Hugging Face GPT-2 folder, or a hub "
                        "name such as openai-community/gpt2 (needs network or the hub cache)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default: auto)")


def _add_generation_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=50, metavar="N", help="tokens to generate (default 50)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="sampling temperature; 0 = greedy, as in the OpenAI API (default 1.0)")
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="sample among the K most likely tokens")
    p.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus sampling with mass P")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling (and preset init)")
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop before this text (repeatable)")
    p.add_argument("--no-kv-cache", action="store_true",
                   help="recompute the whole sequence every step (slow; to compare with the cache)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptlab", description="Build, load, train and run GPT-2-family language models.",
    )
    parser.add_argument("--version", action="version", version=f"gptlab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = commands.add_parser("info", help="show a model's configuration, parameter count and size",
                               description="Show a model's configuration, parameter count, size and FLOPs per token.")
    info.add_argument("model", metavar="MODEL", help="preset, checkpoint folder, HF folder or hub name")
    info.add_argument("--device", default="cpu", help="device to load on (default cpu)")
    info.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=cmd_info)

    gen = commands.add_parser("generate", help="generate text from a prompt (KV-cached, streaming)",
                              description="Generate a continuation of a prompt. Without --prompt, "
                                          "asks for prompts interactively and streams the answers.")
    _add_model_flags(gen)
    gen.add_argument("--prompt", default=None, help="the text to continue (omit for interactive mode)")
    _add_generation_flags(gen)
    gen.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    gen.add_argument("--json", action="store_true",
                     help='print one JSON object {"prompt", "completion", "completion_ids"}')
    gen.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    torch.set_grad_enabled(False)
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except (ValueError, OSError) as err:
        if args.verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
