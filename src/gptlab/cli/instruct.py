"""`gptlab respond`, `gptlab chat` and `gptlab serve`: an instruction-tuned model at work, in its prompt style
(its own chat template, or the named style it was fine-tuned in)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from tqdm import tqdm

from gptlab.chat import CHAT_SETTINGS, chat
from gptlab.cli.classify import label_names
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
from gptlab.cli.flags import add_dataclass_flags, settings_from_flags
from gptlab.data.instruction import load_records, write_records
from gptlab.engine import Engine, EngineLimits
from gptlab.evaluation.responses import RESPONSES_FILE, generate_responses
from gptlab.generation import compile_decode
from gptlab.prompts import style_for
from gptlab.serving.guards import Protection
from gptlab.serving.server import Listening, bind, serve
from gptlab.serving.service import Classifier, ModelService, ServeDefaults


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
    add_batching_flags(respond)
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


CHAT = ("A terminal chat that streams the model's answers, framed by its chat template or the prompt style it was "
        "fine-tuned with. Inside: /settings, /reset, /quit; Ctrl-C stops an answer, Ctrl-D leaves. Its defaults are a "
        "conversation's: answers of up to 256 tokens at temperature 0.7 among the 50 likeliest (gptlab generate and "
        "the Python API: 64 tokens at temperature 1).")


def add_chat(commands: argparse._SubParsersAction) -> None:
    chat_parser = model_command(commands, "chat", cmd_chat, "chat with an instruction-tuned model in the terminal",
                                CHAT)
    add_prompt_style_flag(chat_parser)
    add_generation_flags(chat_parser, CHAT_SETTINGS)
    add_compile_flag(chat_parser)


def cmd_chat(args: argparse.Namespace) -> int:
    loaded = load(args)
    if args.compile:
        compile_decode(loaded.model)
    style = style_for(loaded.meta, args.prompt_style)
    if sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    # Ctrl-C at the prompt keeps the chat open. Python raises KeyboardInterrupt only when SIGINT was not
    # ignored as the process started, and a parent that ignores it (a job runner, a test worker) passes
    # that on: the chat takes Ctrl-C itself.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return chat(loaded, style, generation_settings(args, CHAT_SETTINGS))


SERVE = ("Serve a model at http://HOST:PORT: /v1/chat/completions and /v1/completions (OpenAI's shapes, streaming "
         "with stream=true, n, logprobs, echo), /v1/models, /v1/classify (with --classifier), /info, /health, "
         "/metrics (Prometheus), /openapi.json and a chat page at /. Chat messages are framed by the model's chat "
         "template or prompt style. Concurrent requests are decoded together (continuous batching, --max-batch). "
         "Listens on loopback only and answers only Host names that are loopback or --allowed-host; SIGTERM or "
         "Ctrl-C finishes the answers in flight, then exits.")


def add_serve(commands: argparse._SubParsersAction) -> None:
    server = model_command(commands, "serve", cmd_serve, seed=0,
                           help="serve a model over an OpenAI-compatible HTTP API, with a web chat page",
                           description=SERVE)
    add_prompt_style_flag(server)
    server.add_argument("--name", default=None,
                        help="model id clients send and /v1/models lists (default: the --model name)")
    server.add_argument("--classifier", default=None, metavar="DIR",
                        help="also serve this classifier (a gptlab finetune classify run or checkpoint) at "
                             "POST /v1/classify and in the chat page's Classify tab")
    add_compile_flag(server)
    for settings in (ServeDefaults, Listening, EngineLimits, Protection):
        add_dataclass_flags(server, settings)


def cmd_serve(args: argparse.Namespace) -> int:
    protection = settings_from_flags(args, Protection(api_key=os.environ.get("GPTLAB_API_KEY") or None))
    listening = settings_from_flags(args, Listening())
    defaults = settings_from_flags(args, ServeDefaults())
    limits = settings_from_flags(args, EngineLimits())
    with bind(listening) as sock:  # before loading: a port in use fails at once
        loaded = load(args)
        style = style_for(loaded.meta, args.prompt_style)
        name = args.name or Path(args.model.rstrip("/")).name
        classifier = load_classifier(args)
        engine = Engine(loaded.model, limits, args.compile)
        service = ModelService(loaded, style, name, engine, defaults, classifier)

        def ready(url: str) -> None:
            print(f"serving {loaded.description} as {name!r} ({style.name} prompts for chat)\n"
                  f"  chat page:  {url}/\n  OpenAI API: {url}/v1  (Ctrl-C stops)", flush=True)

        try:
            serve(service, protection, listening, sock, on_ready=ready)
        finally:
            engine.close(drain=False)  # the server has drained its answers; anything left has no reader
    return 0


def load_classifier(args: argparse.Namespace) -> Classifier | None:
    """The --classifier model, on the server's device and dtype, with its class names."""
    if args.classifier is None:
        return None
    loaded = load(argparse.Namespace(model=args.classifier, device=args.device, dtype=args.dtype, verify=args.verify,
                                      quantize=None))  # a classifier is small: its weights stay as saved
    return Classifier(loaded, label_names(loaded, None, args.classifier))
