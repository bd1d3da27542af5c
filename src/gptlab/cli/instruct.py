"""`gptlab respond`, `gptlab chat` and `gptlab serve`: an instruction-tuned model at work, in its prompt style."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tqdm import tqdm

from gptlab.chat import chat
from gptlab.cli.common import (
    add_batching_flags,
    add_compile_flag,
    add_generation_flags,
    add_prompt_style_flag,
    add_record_field_flags,
    generation_settings,
    load,
    model_command,
)
from gptlab.data.instruction import load_records, write_records
from gptlab.engine import Engine, EngineLimits
from gptlab.evaluation.responses import RESPONSES_FILE, generate_responses
from gptlab.generation import compile_decode
from gptlab.prompts import style_for
from gptlab.serving.app import ModelService, serve


def add_respond(commands: argparse._SubParsersAction) -> None:
    respond = model_command(commands, "respond", cmd_respond, seed=0,
                            help="answer every record of an instruction file (greedy)",
                            description="Generate a model's responses to instruction records and save them with "
                                        f"each record as model_response (the book's {RESPONSES_FILE} format), "
                                        "e.g. for an LLM judge.")
    respond.add_argument("--data", required=True,
                         help="instruction-data or a JSON list / JSONL file of records (e.g. a run's test.json)")
    respond.add_argument("--out", required=True, help="JSON file to write")
    add_prompt_style_flag(respond)
    respond.add_argument("--max-new-tokens", type=int, default=256, metavar="N",
                         help="max tokens per response (default 256)")
    add_batching_flags(respond, server=False)
    add_compile_flag(respond)
    add_record_field_flags(respond)


def cmd_respond(args: argparse.Namespace) -> int:
    records = load_records(args.data, args.instruction_field, args.input_field, args.output_field,
                           require_output=False)
    loaded = load(args)
    style = style_for(loaded.meta, args.prompt_style)
    responses = list(tqdm(generate_responses(loaded.model, loaded.tokenizer, style, records, args.max_new_tokens,
                                             args.max_batch, args.compile),
                          total=len(records), desc="responses", unit="record", dynamic_ncols=True))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_records(records, out, responses)
    print(f"wrote {len(responses)} responses ({style.name} prompts) to {out}")
    return 0


CHAT = ("A terminal chat that streams the model's answers, in the prompt style it was fine-tuned with. Inside: "
        "/settings, /reset, /quit; Ctrl-C stops an answer, Ctrl-D leaves.")


def add_chat(commands: argparse._SubParsersAction) -> None:
    chat_parser = model_command(commands, "chat", cmd_chat, "chat with an instruction-tuned model in the terminal",
                                CHAT)
    add_prompt_style_flag(chat_parser)
    add_generation_flags(chat_parser, max_new_tokens=256, temperature=0.7, top_k=50)
    add_compile_flag(chat_parser)


def cmd_chat(args: argparse.Namespace) -> int:
    loaded = load(args)
    if args.compile:
        compile_decode(loaded.model)
    style = style_for(loaded.meta, args.prompt_style)
    if sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    return chat(loaded, style, generation_settings(args))


def add_serve(commands: argparse._SubParsersAction) -> None:
    server = model_command(
        commands, "serve", cmd_serve, seed=0,
        help="serve a model over an OpenAI-compatible HTTP API, with a web chat page",
        description="Serve a model at http://HOST:PORT: /v1/chat/completions and /v1/completions (OpenAI's "
                    "shapes, streaming with stream=true), /v1/models, /health, and a chat page at /. Chat "
                    "messages use the model's prompt style. Concurrent requests are decoded together "
                    "(continuous batching, --max-batch at a time; --max-queue more wait, beyond that 429).")
    add_prompt_style_flag(server)
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    server.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    server.add_argument("--name", default=None,
                        help="model id clients send and /v1/models lists (default: the --model name)")
    server.add_argument("--max-tokens", type=int, default=256, metavar="N",
                        help="completion tokens when a request gives no max_tokens (default 256)")
    add_batching_flags(server)
    add_compile_flag(server)
    server.add_argument("--api-key", default=None,
                        help="require `Authorization: Bearer KEY` on /v1 (default: $GPTLAB_API_KEY, else none)")


def cmd_serve(args: argparse.Namespace) -> int:
    loaded = load(args)
    style = style_for(loaded.meta, args.prompt_style)
    name = args.name or Path(args.model.rstrip("/")).name
    engine = Engine(loaded.model, EngineLimits(max_batch=args.max_batch, max_queue=args.max_queue), args.compile)
    service = ModelService(loaded, style, name, engine, max_tokens=args.max_tokens,
                           api_key=args.api_key or os.environ.get("GPTLAB_API_KEY") or None)

    def ready(url: str) -> None:
        print(f"serving {loaded.description} as {name!r} ({style.name} prompts for chat)\n"
              f"  chat page:  {url}/\n  OpenAI API: {url}/v1  (Ctrl-C stops)", flush=True)

    try:
        serve(service, args.host, args.port, on_ready=ready)
    finally:
        engine.close(drain=False)
    return 0
