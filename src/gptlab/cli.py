"""`gptlab <command>`: thin wiring from command-line flags to the library."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from gptlab import __version__
from gptlab.chat import chat
from gptlab.checkpoint import LoadedModel, load_model
from gptlab.data.instruction import load_records, write_records
from gptlab.data.text import token_stream
from gptlab.devices import pick_device
from gptlab.evaluation.judge import BACKENDS, JudgeClient, judge_records, responses_of, score_summary
from gptlab.evaluation.perplexity import perplexity
from gptlab.evaluation.plots import score_histogram
from gptlab.evaluation.responses import RESPONSES_FILE, generate_responses
from gptlab.generation import Completion, GenerationSettings
from gptlab.prompts import PROMPT_STYLES, PromptStyle, style_for
from gptlab.serving.app import ModelService, serve
from gptlab.training.loop import TrainSettings, is_main_process
from gptlab.training.classify import ClassifyConfig, classify_texts
from gptlab.training.classify import run as run_classify
from gptlab.training.dpo import DPOConfig
from gptlab.training.dpo import run as run_dpo
from gptlab.training.pretrain import PretrainConfig
from gptlab.training.pretrain import run as run_pretrain
from gptlab.training.sft import SFTConfig
from gptlab.training.sft import run as run_sft

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
    return GenerationSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, seed=args.seed, stop_strings=tuple(args.stop or ()), kv_cache=not args.no_kv_cache,
    )


def cmd_generate(args: argparse.Namespace) -> int:
    loaded = _load(args)
    settings = _settings(args, loaded)
    if args.prompt is None:
        return _interactive(loaded, settings)
    pieces = Completion(loaded.model, loaded.tokenizer, loaded.tokenizer.encode(args.prompt), settings)
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
        pieces = Completion(loaded.model, loaded.tokenizer, loaded.tokenizer.encode(prompt), settings)
        print(prompt, end="", flush=True)
        for piece in pieces:
            print(piece, end="", flush=True)
        print()


def _field_help(cls: type) -> dict[str, str]:
    """Each dataclass field's trailing `# comment`: the one place its meaning is written."""
    pattern = re.compile(r"^\s+(\w+): [^=#]+(?:=[^#]*)?#\s*(.+)$")
    return {m[1]: m[2] for line in inspect.getsource(cls).splitlines() if (m := pattern.match(line))}


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, shown: object | None = None) -> None:
    """One `--flag` per field; defaults (shown from `shown`, an instance) are suppressed in the
    namespace so that only flags given override a config file."""
    helps = _field_help(cls)
    for f in dataclasses.fields(cls):
        if str(f.type) == "TrainSettings":  # nested settings get their own flags
            continue
        flag = "--" + f.name.replace("_", "-")
        default = getattr(shown, f.name) if shown is not None else (
            f.default if f.default is not dataclasses.MISSING else None)
        text = helps.get(f.name, "") + (f" (default: {default})" if default not in (None, "") else "")
        kind = str(f.type)
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        elif kind.startswith("list"):
            parser.add_argument(flag, nargs="+", default=argparse.SUPPRESS, metavar="X", help=text)
        else:
            convert = int if kind.startswith("int") else float if kind.startswith("float") else str
            parser.add_argument(flag, type=convert, default=argparse.SUPPRESS, metavar=f.name.upper(), help=text)


def _task_config(args: argparse.Namespace, cls: type, default_out: str) -> Any:
    """The task's config dataclass: a --config file (or, with --resume, the run's own), then flags."""
    given = {k: v for k, v in vars(args).items() if k not in ("func", "command", "verbose", "config", "resume")}
    base: dict[str, Any] = {}
    config_file = args.config
    if config_file is None and args.resume:
        out = Path(given.get("out", default_out))
        config_file = out / "config.json" if (out / "config.json").is_file() else None
    if config_file is not None:
        base = json.loads(Path(config_file).read_text(encoding="utf-8"))
    train_fields = {f.name for f in dataclasses.fields(TrainSettings)}
    train_values = {**base.get("train", {}), **{k: v for k, v in given.items() if k in train_fields}}
    top = {**{k: v for k, v in base.items() if k != "train"}, **{k: v for k, v in given.items() if k not in train_fields}}
    if "data" not in top:
        raise ValueError(f"{args.command} needs --data or --config")
    defaults = dataclasses.asdict(cls.default_train(top))  # the task's own, for these flags
    return cls.from_dict({**top, "train": {**defaults, **train_values}})


def _train_with_progress(config: Any, run_task: Callable[..., dict], resume: bool, again: str) -> int:
    """Run a training task with a progress bar, eval lines and plots; 130 after Ctrl-C."""
    from gptlab.evaluation.plots import plot_run  # matplotlib: imported only when needed

    torch.set_grad_enabled(True)
    main_process = is_main_process()  # under torchrun only rank 0 reports
    bar = respond_bar = None

    def on_event(event: Any) -> None:
        nonlocal bar, respond_bar
        if event.kind == "respond":  # test-set responses after training
            if respond_bar is None:
                respond_bar = tqdm(total=event.values["total"], desc="responses", unit="record",
                                   dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30)
            respond_bar.update(event.step - respond_bar.n)
            return
        if bar is None:  # created at the first step, after data and model are ready
            bar = tqdm(total=config.train.max_steps, initial=event.step - 1, desc="train", unit="step",
                       dynamic_ncols=True, disable=not main_process,
                       mininterval=0.5 if sys.stderr.isatty() else 30)
        if event.kind == "done":
            bar.close()
        elif event.kind == "step":
            bar.set_postfix(loss=f"{event.values['loss']:.3f}", lr=f"{event.values['lr']:.1e}", refresh=False)
            bar.update(event.step - bar.n)
        elif event.kind == "eval":
            v = event.values
            extra = "".join(f", {k.replace('_', ' ')} {v[k]:.3f}" for k in v if k.endswith(("accuracy", "margin")))
            bar.write(f"step {v['step']}: train loss {v['train_loss']:.3f}, val loss {v['val_loss']:.3f}"
                      f"{extra}, {v['tokens_per_second']:,.0f} tokens/s", file=sys.stderr)
            if "sample" in v:
                bar.write(f"  sample: {v['sample']!r}", file=sys.stderr)

    summary = run_task(config, resume=resume, on_event=on_event)
    if respond_bar is not None:
        respond_bar.close()
    if not main_process:
        return 0
    plots = plot_run(config.out)
    print(json.dumps(summary, indent=2))
    if "baseline" in summary:
        print(f"test accuracy: {summary['test_accuracy']:.4f} (this model) vs "
              f"{summary['baseline']['test_accuracy']:.4f} ({summary['baseline']['method']})")
    print(f"run folder: {config.out} (plots: {', '.join(p.name for p in plots) or 'none'})")
    if summary["status"] == "interrupted":
        print(f"interrupted: saved {config.out}/checkpoints/last; continue with "
              f"{again} --out {config.out} --resume", file=sys.stderr)
        return 130
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    config = _task_config(args, PretrainConfig, "runs/pretrain")
    return _train_with_progress(config, run_pretrain, args.resume, "gptlab pretrain")


def cmd_finetune_classify(args: argparse.Namespace) -> int:
    config = _task_config(args, ClassifyConfig, "runs/classify")
    return _train_with_progress(config, run_classify, args.resume, "gptlab finetune classify")


def cmd_finetune_instruct(args: argparse.Namespace) -> int:
    config = _task_config(args, SFTConfig, "runs/instruct")
    return _train_with_progress(config, run_sft, args.resume, "gptlab finetune instruct")


def cmd_finetune_dpo(args: argparse.Namespace) -> int:
    config = _task_config(args, DPOConfig, "runs/dpo")
    return _train_with_progress(config, run_dpo, args.resume, "gptlab finetune dpo")


def _prompt_style(args: argparse.Namespace, loaded: LoadedModel) -> PromptStyle:
    """--prompt-style, else the one the model was fine-tuned with, else alpaca."""
    return style_for(loaded.meta, args.prompt_style)


def cmd_respond(args: argparse.Namespace) -> int:
    records = load_records(args.data, args.instruction_field, args.input_field, args.output_field,
                           require_output=False)
    loaded = _load(args)
    style = _prompt_style(args, loaded)
    responses = list(tqdm(generate_responses(loaded.model, loaded.tokenizer, style, records, args.max_new_tokens,
                                             args.batch_size),
                          total=len(records), desc="responses", unit="record", dynamic_ncols=True))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_records(records, out, responses)
    print(f"wrote {len(responses)} responses ({style.name} prompts) to {out}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    loaded = _load(args)
    style = _prompt_style(args, loaded)
    if sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    return chat(loaded, style, _settings(args, loaded))


def cmd_serve(args: argparse.Namespace) -> int:
    loaded = _load(args)
    style = _prompt_style(args, loaded)
    name = args.name or Path(args.model.rstrip("/")).name
    service = ModelService(loaded, style, name, max_tokens=args.max_tokens,
                           api_key=args.api_key or os.environ.get("GPTLAB_API_KEY") or None)

    def ready(url: str) -> None:
        print(f"serving {loaded.description} as {name!r} ({style.name} prompts for chat)\n"
              f"  chat page:  {url}/\n  OpenAI API: {url}/v1  (Ctrl-C stops)", flush=True)

    serve(service, args.host, args.port, on_ready=ready)
    return 0


def cmd_perplexity(args: argparse.Namespace) -> int:
    loaded = _load(args)
    tokens = token_stream(args.data, loaded.tokenizer)[:args.max_tokens]
    context = args.context or loaded.model.config.context_length
    if context > loaded.model.config.context_length:
        raise ValueError(f"--context {context} is longer than the model's context ({loaded.model.config.context_length})")
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


def cmd_judge(args: argparse.Namespace) -> int:
    records = load_records(args.responses, args.instruction_field, args.input_field, args.output_field)
    responses = responses_of(records, args.response_field, args.responses)
    api_key = args.api_key or (os.environ.get("OPENAI_API_KEY") if args.backend == "openai" else None)
    client = JudgeClient(args.backend, args.judge_model, args.url, api_key)
    source = Path(args.responses)
    out = Path(args.out) if args.out else source.with_name(f"{source.stem}-scores.json")
    rows: list[dict] = []
    status = 0
    try:
        for row in tqdm(judge_records(client, records, responses), total=len(records), desc="judging",
                        unit="response", dynamic_ncols=True):
            rows.append(row)
    except (KeyboardInterrupt, OSError) as err:  # a judge that fails midway keeps the scores so far
        status = 130 if isinstance(err, KeyboardInterrupt) else 1
        print(f"{'interrupted' if status == 130 else f'error: {err}'}: saving the {len(rows)} scores so far",
              file=sys.stderr)
    summary = {"judge": f"{args.backend}:{args.judge_model}", **score_summary([r["score"] for r in rows])}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "records": rows}, indent=2, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    plot = score_histogram([r["score"] for r in rows if r["score"] is not None], out.with_suffix(".png"),
                           f"{source.name}: {summary['judge']}")
    if args.json:
        print(json.dumps(summary))
    else:
        scored = f"mean {summary['mean']:.2f} (median {summary['median']}, min {summary['min']}, max " \
                 f"{summary['max']})" if summary["scored"] else "no scores"
        print(f"{summary['judge']} scored {summary['scored']}/{summary['records']} responses: {scored}; "
              f"{summary['unparsable']} replies without a score\nwrote {out} and {plot}")
    return status


def cmd_classify(args: argparse.Namespace) -> int:
    texts = list(args.texts)
    if args.file:
        texts += [line for line in Path(args.file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ValueError("give texts to classify as arguments or with --file")
    loaded = load_model(args.model, device=pick_device(args.device))
    names = loaded.meta.labels
    if loaded.model.config.num_classes is None or not names:
        raise ValueError(f"{args.model} is not a classifier (train one with gptlab finetune classify)")
    results = [{"text": text, "label": names[int(p.argmax())], "probability": round(float(p.max()), 4),
                "probabilities": {n: round(float(v), 4) for n, v in zip(names, p)}}
               for text, p in zip(texts, classify_texts(loaded, texts))]
    for result in results:
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{result['label']}\t{result['probability']:.3f}\t{result['text']}")
    return 0


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="MODEL",
                   help="a preset (gpt-tiny, gpt-small, gpt2, gpt2-medium, gpt2-large, gpt2-xl: random "
                        "weights), smollm2 (the built-in real SmolLM2-135M-Instruct), a gptlab checkpoint or "
                        "run folder, a Hugging Face GPT-2 folder, a llama .gguf file, or a hub name such as "
                        "openai-community/gpt2 (needs network or the hub cache)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default: auto)")


def _add_generation_flags(p: argparse.ArgumentParser, max_new_tokens: int = 50, temperature: float = 1.0,
                          top_k: int | None = None) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens, metavar="N",
                   help=f"tokens to generate (default {max_new_tokens})")
    p.add_argument("--temperature", type=float, default=temperature, metavar="T",
                   help=f"sampling temperature; 0 = greedy, as in the OpenAI API (default {temperature})")
    p.add_argument("--top-k", type=int, default=top_k, metavar="K",
                   help="sample among the K most likely tokens" + (f" (default {top_k})" if top_k else ""))
    p.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus sampling with mass P")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling (and preset init)")
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop before this text (repeatable)")
    p.add_argument("--no-kv-cache", action="store_true",
                   help="recompute the whole sequence every step (slow; to compare with the cache)")


def _add_prompt_style_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt-style", choices=list(PROMPT_STYLES), default=None,
                   help="how instructions are framed (default: the model's own, else alpaca)")


def _add_trainer(commands, name: str, config_cls: type, func: Callable, help: str, description: str) -> None:
    """A training command: --config/--resume plus one flag per field of the task and its settings."""
    parser = commands.add_parser(name, help=help, description=description)
    parser.add_argument("--config", default=None, help="a run's config.json to replay (flags given override it)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoints/last")
    _add_dataclass_flags(parser, config_cls)
    _add_dataclass_flags(parser, TrainSettings, shown=config_cls.default_train({}))
    parser.set_defaults(func=func)


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
                     help='print one JSON object {"prompt", "completion", "completion_ids", "finish_reason"}')
    gen.set_defaults(func=cmd_generate)

    _add_trainer(commands, "pretrain", PretrainConfig, cmd_pretrain,
                 help="pretrain a GPT on text files or built-in data sets (checkpoints, resume, plots)",
                 description="Pretrain a GPT with next-token prediction. Writes runs/<name>/ with config.json, "
                             "metrics.jsonl, loss.png, lr.png, checkpoints/last and checkpoints/best, "
                             "summary.json. Run under `torchrun --nproc_per_node=N` for data-parallel training.")

    finetune = commands.add_parser("finetune", help="fine-tune a model for a task (classify, instruct, dpo)",
                                   description="Fine-tune a model for a task.")
    tasks = finetune.add_subparsers(dest="task", metavar="TASK", required=True)
    _add_trainer(tasks, "classify", ClassifyConfig, cmd_finetune_classify,
                 help="train a text classifier (SMS spam or any labelled CSV/TSV/JSONL)",
                 description="Swap the LM head for a class head and fine-tune it on labelled text. Writes "
                             "runs/<name>/ with the splits, metrics, plots, checkpoints and summary.json "
                             "(accuracy, F1 and confusion on train/val/test, and a TF-IDF baseline).")

    _add_trainer(tasks, "instruct", SFTConfig, cmd_finetune_instruct,
                 help="instruction fine-tuning (SFT) on instruction/input/output records",
                 description="Teach a model to follow instructions: train on prompt + response with the "
                             "prompt masked, then answer every test record. Writes runs/<name>/ with the "
                             f"train/test/val splits, metrics, loss.png, checkpoints, {RESPONSES_FILE} "
                             "and summary.json. The optimiser defaults are the book's, for pretrained "
                             "weights; a random preset needs a higher --lr (e.g. 1e-3).")

    _add_trainer(tasks, "dpo", DPOConfig, cmd_finetune_dpo,
                 help="preference tuning (DPO) of an instruction-tuned model on chosen/rejected pairs",
                 description="Direct Preference Optimization, as in the book's chapter 7 bonus: make an "
                             "instruction-tuned model (--model, e.g. a finetune instruct run) prefer each "
                             "record's chosen response over its rejected one, relative to a frozen copy of "
                             "its starting weights, then answer every test record. Evaluations report the "
                             "DPO loss and, on training and validation pairs, the reward accuracy (share "
                             "of pairs whose chosen reward is higher) and mean reward margin; best/ is the "
                             "lowest validation DPO loss. Writes runs/<name>/ with the splits, metrics, "
                             f"loss.png, reward_margins.png, checkpoints, {RESPONSES_FILE} and "
                             "summary.json. The optimiser defaults are the book's, for GPT-2 355M after "
                             "finetune instruct.")

    respond = commands.add_parser("respond", help="answer every record of an instruction file (greedy)",
                                  description="Generate a model's responses to instruction records and save "
                                              "them with each record as model_response (the book's "
                                              f"{RESPONSES_FILE} format), e.g. for an LLM judge.")
    _add_model_flags(respond)
    respond.add_argument("--data", required=True,
                         help="instruction-data or a JSON list / JSONL file of records (e.g. a run's test.json)")
    respond.add_argument("--out", required=True, help="JSON file to write")
    _add_prompt_style_flag(respond)
    respond.add_argument("--max-new-tokens", type=int, default=256, metavar="N",
                         help="max tokens per response (default 256)")
    respond.add_argument("--batch-size", type=int, default=8, help="records generated together (default 8)")
    for name in ("instruction", "input", "output"):
        respond.add_argument(f"--{name}-field", default=name, help=f"record field holding the {name} (default {name})")
    respond.set_defaults(func=cmd_respond, seed=0)

    chat_parser = commands.add_parser("chat", help="chat with an instruction-tuned model in the terminal",
                                      description="A terminal chat that streams the model's answers, in the "
                                                  "prompt style it was fine-tuned with. Inside: /settings, "
                                                  "/reset, /quit; Ctrl-C stops an answer, Ctrl-D leaves.")
    _add_model_flags(chat_parser)
    _add_prompt_style_flag(chat_parser)
    _add_generation_flags(chat_parser, max_new_tokens=256, temperature=0.7, top_k=50)
    chat_parser.set_defaults(func=cmd_chat)

    server = commands.add_parser(
        "serve", help="serve a model over an OpenAI-compatible HTTP API, with a web chat page",
        description="Serve a model at http://HOST:PORT: /v1/chat/completions and /v1/completions (OpenAI's "
                    "shapes, streaming with stream=true), /v1/models, /health, and a chat page at /. Chat "
                    "messages use the model's prompt style. One generation runs at a time; others wait.")
    _add_model_flags(server)
    _add_prompt_style_flag(server)
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    server.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    server.add_argument("--name", default=None,
                        help="model id clients send and /v1/models lists (default: the --model name)")
    server.add_argument("--max-tokens", type=int, default=256, metavar="N",
                        help="completion tokens when a request gives no max_tokens (default 256)")
    server.add_argument("--api-key", default=None,
                        help="require `Authorization: Bearer KEY` on /v1 (default: $GPTLAB_API_KEY, else none)")
    server.set_defaults(func=cmd_serve, seed=0)

    ppl = commands.add_parser("perplexity", help="a model's loss and perplexity on text (sliding window)",
                              description="Score every token of the text once, each window predicting only the "
                                          "tokens earlier windows did not, with at least context - stride tokens "
                                          "of left context (after the first window).")
    _add_model_flags(ppl)
    ppl.add_argument("--data", action="append", required=True, metavar="SOURCE",
                     help="a built-in data set (the-verdict, tinyshakespeare) or a text file; repeatable")
    ppl.add_argument("--context", type=int, default=None, help="window length (default: the model's context)")
    ppl.add_argument("--stride", type=int, default=None,
                     help="tokens between window starts (default: half the window; = window is fastest)")
    ppl.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    ppl.add_argument("--max-tokens", type=int, default=None, metavar="N", help="score only the first N tokens")
    ppl.add_argument("--json", action="store_true", help='print one JSON object {"tokens", "loss", "perplexity", ...}')
    ppl.set_defaults(func=cmd_perplexity, seed=0)

    judge = commands.add_parser(
        "judge", help="score instruction responses 0-100 with a judge model (Ollama or OpenAI-compatible)",
        description="LLM-as-a-judge, as in the book's chapter 7: a judge model scores each model_response "
                    "against the record's output from 0 to 100 (temperature 0, fixed seed). Writes the "
                    "records with judge_reply and score, a summary, and a histogram PNG.")
    judge.add_argument("responses", help=f"a JSON/JSONL file of records with model_response (e.g. a run's {RESPONSES_FILE})")
    judge.add_argument("--judge-model", required=True, help="the judge's model name, e.g. llama3 (Ollama) or gpt-4o-mini")
    judge.add_argument("--backend", choices=BACKENDS, default="ollama",
                       help="ollama (/api/chat) or openai (any OpenAI-compatible /v1/chat/completions; default ollama)")
    judge.add_argument("--url", default=None, help="server base URL (default: http://localhost:11434 for ollama, "
                                                    "https://api.openai.com/v1 for openai)")
    judge.add_argument("--api-key", default=None, help="Bearer token (openai default: $OPENAI_API_KEY)")
    judge.add_argument("--out", default=None, help="JSON file to write (default: <responses>-scores.json)")
    judge.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    for name in ("instruction", "input", "output"):
        judge.add_argument(f"--{name}-field", default=name, help=f"record field holding the {name} (default {name})")
    judge.add_argument("--response-field", default="model_response",
                       help="record field holding the response to score (default model_response)")
    judge.set_defaults(func=cmd_judge)

    cls = commands.add_parser("classify", help="label texts with a trained classifier",
                              description="Print label, probability and text for each text.")
    cls.add_argument("--model", required=True, help="a classifier run or checkpoint folder")
    cls.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    cls.add_argument("--file", help="a file with one text per line")
    cls.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default: auto)")
    cls.add_argument("--json", action="store_true", help="print one JSON object per text")
    cls.set_defaults(func=cmd_classify)
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


if __name__ == "__main__":
    sys.exit(main())
