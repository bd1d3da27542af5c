"""What the model commands share: the flags that name a model and how it generates, and loading it."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from gptlab.cli.flags import add_dataclass_flags, settings_from_flags
from gptlab.devices import DTYPES, pick_device, pick_dtype
from gptlab.engine import EngineLimits
from gptlab.generation import GenerationSettings
from gptlab.loading import LoadedModel, load_model
from gptlab.prompts import AUTO, PROMPT_STYLES, TEMPLATE
from gptlab.quantize import SCHEMES

log = logging.getLogger("gptlab")


def model_command(commands: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace], int],
                  help: str, description: str, **defaults: Any) -> argparse.ArgumentParser:
    """The parser of a command that loads --model (on --device) and runs `run`."""
    p = commands.add_parser(name, help=help, description=description)
    p.set_defaults(func=run, **defaults)
    p.add_argument("--model", required=True, metavar="MODEL",
                   help="a preset (random weights: gpt-tiny, gpt2, ..., llama-tiny, qwen3-0.6b, gemma-3-270m, "
                        "...; all in docs/families.md), smollm2 (the built-in real SmolLM2-135M-Instruct), a gptlab "
                        "checkpoint or run folder, a Hugging Face folder of a family gptlab reads (GPT-2, Llama, "
                        "Qwen2/3, Qwen3-MoE, Gemma 3, Phi-3, Mistral, OLMo 2, Pythia), an OpenAI GPT-2 folder "
                        "(hparams.json + model.ckpt.*, as gptlab download or the book's gpt_download.py writes it), "
                        "the book's .pth state dict (GPTModel), a .gguf file, or a hub name such as "
                        "openai-community/gpt2 (needs network or the hub cache)")
    add_device_flags(p)
    return p


def add_device_flags(p: argparse.ArgumentParser, device: str = "auto") -> None:
    """--device, --dtype, --quantize and --no-verify: where the model runs, in what dtype, and how it loads."""
    p.add_argument("--device", default=device, help=f"cpu, cuda, cuda:1, mps or auto (default: {device})")
    p.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                   help="weights and KV cache in this dtype; logits and sampling stay float32 or wider (default auto: "
                        "bfloat16 on GPUs that support it or with --quantize, else float32)")
    p.add_argument("--quantize", choices=SCHEMES, default=None,
                   help="weight-only quantization of the block projections, from the full-precision weights at "
                        "load: int8 (a scale per output row, the LM head too; about 2x faster decoding on CPU than "
                        "float32) or int4 (a scale and zero per 32 inputs, the LM head kept bfloat16; smaller, a "
                        "little less exact). A quantized checkpoint (gptlab convert --quantize) loads without it")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the check of a gptlab folder's files against the sha256 in its manifest.json (on by "
                        "default: a damaged file is refused by name; the check reads the weights once more)")


def add_generation_flags(p: argparse.ArgumentParser, defaults: GenerationSettings | None = None) -> None:
    """One flag per `GenerationSettings` field, showing the command's `defaults` (chat's are its own; none:
    the dataclass's, which the Python API uses too)."""
    add_dataclass_flags(p, GenerationSettings, shown=dataclasses.asdict(defaults or GenerationSettings()))


def add_compile_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile", action="store_true",
                   help="compile the one-token decode step with torch.compile before answering (takes a while "
                        "once, reported; faster decoding after; falls back to uncompiled where compile cannot run)")


def add_batching_flags(p: argparse.ArgumentParser) -> None:
    """`respond`'s --max-batch, with --batch-size, its older name (`serve` takes all of `EngineLimits` as flags)."""
    default = EngineLimits().max_batch
    p.add_argument("--max-batch", "--batch-size", dest="max_batch", type=int, default=default, metavar="N",
                   help=f"records answered together, each joining as another ends (default {default}; "
                        "--batch-size is its older name)")


def add_prompt_style_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt-style", choices=[AUTO, TEMPLATE, *PROMPT_STYLES], default=AUTO,
                   help="how messages are framed: template (the model's own chat template) or a named style "
                        "(default auto: the style the model was fine-tuned with, else its chat template, else alpaca)")


def add_record_field_flags(p: argparse.ArgumentParser) -> None:
    """--instruction-field, --input-field, --output-field: records with other field names."""
    for name in ("instruction", "input", "output"):
        p.add_argument(f"--{name}-field", default=name, help=f"record field holding the {name} (default {name})")


def load(args: argparse.Namespace) -> LoadedModel:
    """The model --model names, on --device in --dtype, with a warning when its weights are random."""
    device = pick_device(args.device)
    # auto on CPU is load_model's own choice: float32, or bfloat16 for a model quantized now or saved quantized
    dtype = None if args.dtype == "auto" and device.type == "cpu" else pick_dtype(args.dtype, device)
    loaded = load_model(args.model, device=device, dtype=dtype, seed=getattr(args, "seed", None) or 0,
                        quantize=args.quantize, verify=args.verify)
    if loaded.random_weights:
        log.warning("%s: the weights are random, so the text will be noise", loaded.description)
    return loaded


def generation_settings(args: argparse.Namespace, defaults: GenerationSettings | None = None) -> GenerationSettings:
    """The command's `defaults` with the sampling flags given (generation adds the model's end-of-text stop
    itself); checked by the dataclass, as the Python API's settings are."""
    return settings_from_flags(args, defaults or GenerationSettings())
