"""`gptlab respond`, `gptlab chat` and `gptlab serve`: an instruction-tuned model at work, in its prompt style
(its own chat template, or the named style it was fine-tuned in)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from tqdm import tqdm

from gptlab.chat import chat
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


CHAT = ("A terminal chat that streams the model's answers, framed by its chat template or the prompt style it was "
        "fine-tuned with. Inside: /settings, /reset, /quit; Ctrl-C stops an answer, Ctrl-D leaves.")


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
    # Ctrl-C at the prompt keeps the chat open. Python raises KeyboardInterrupt only when SIGINT was not
    # ignored as the process started, and a parent that ignores it (a job runner, a test worker) passes
    # that on: the chat takes Ctrl-C itself.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return chat(loaded, style, generation_settings(args))


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
    listening, defaults, protection = Listening(), ServeDefaults(), Protection()
    server.add_argument("--host", default=listening.host,
                        help=f"address to listen on (default {listening.host}; 0.0.0.0 exposes it to the network: "
                             "add --allowed-host and --api-key, or put it behind a proxy)")
    server.add_argument("--port", type=int, default=listening.port,
                        help=f"port (default {listening.port}; 0 picks a free one)")
    server.add_argument("--name", default=None,
                        help="model id clients send and /v1/models lists (default: the --model name)")
    server.add_argument("--max-tokens", type=int, default=defaults.max_tokens, metavar="N",
                        help=f"completion tokens when a request gives no max_tokens (default {defaults.max_tokens})")
    server.add_argument("--temperature", type=float, default=defaults.temperature, metavar="T",
                        help=f"temperature when a request gives none; 0 = greedy (default {defaults.temperature})")
    server.add_argument("--top-k", type=int, default=None, metavar="K",
                        help="top_k when a request gives none (default: none, all tokens)")
    server.add_argument("--top-p", type=float, default=None, metavar="P",
                        help="top_p when a request gives none (default: none, the whole mass)")
    server.add_argument("--system", default=None, metavar="TEXT",
                        help="system message for chat requests that have none (default: none)")
    server.add_argument("--classifier", default=None, metavar="DIR",
                        help="also serve this classifier (a gptlab finetune classify run or checkpoint) at "
                             "POST /v1/classify and in the chat page's Classify tab")
    add_batching_flags(server)
    add_compile_flag(server)
    server.add_argument("--api-key", default=None,
                        help="require `Authorization: Bearer KEY` on every route but /health and / (the chat page, "
                             "which asks for the key; default: $GPTLAB_API_KEY, else none)")
    server.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="also answer requests whose Host header names NAME, e.g. the name a proxy or the "
                             "network uses (repeatable; * allows any). Default: loopback names only, against DNS "
                             "rebinding")
    server.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="let web pages at ORIGIN (e.g. https://app.example.com) call the API (repeatable; "
                             "default none: pages of other sites are refused)")
    server.add_argument("--max-body-bytes", type=int, default=protection.max_body_bytes, metavar="N",
                        help=f"largest request body (default {protection.max_body_bytes:,})")
    server.add_argument("--body-timeout", type=float, default=protection.body_timeout, metavar="SECONDS",
                        help=f"seconds for a request's body to arrive (default {protection.body_timeout:g})")
    server.add_argument("--head-timeout", type=int, default=listening.head_timeout, metavar="SECONDS",
                        help="seconds for a request's line and headers to arrive, and for an idle keep-alive "
                             f"socket to stay open (default {listening.head_timeout})")
    server.add_argument("--request-timeout", type=float, default=protection.request_timeout, metavar="SECONDS",
                        help="wall-clock limit of one request, streaming included (default "
                             f"{protection.request_timeout:g})")
    server.add_argument("--log-prompts", action="store_true",
                        help="log each prompt's text with its request id (default: never, prompts may be private)")


def cmd_serve(args: argparse.Namespace) -> int:
    protection = Protection(tuple(name.lower() for name in args.allowed_host), tuple(args.cors_origin),
                            args.api_key or os.environ.get("GPTLAB_API_KEY") or None, args.max_body_bytes,
                            args.body_timeout, args.request_timeout, args.log_prompts)
    listening = Listening(args.host, args.port, args.head_timeout)
    defaults = ServeDefaults(args.temperature, args.top_k, args.top_p, args.max_tokens, args.system)
    with bind(listening) as sock:  # before loading: a port in use fails at once
        loaded = load(args)
        style = style_for(loaded.meta, args.prompt_style)
        name = args.name or Path(args.model.rstrip("/")).name
        classifier = load_classifier(args)
        engine = Engine(loaded.model, EngineLimits(args.max_batch, args.max_queue), args.compile)
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
