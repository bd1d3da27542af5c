"""Pretraining: next-token prediction on plain text, through the shared loop."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from gptlab.checkpoint.meta import CheckpointMeta
from gptlab.config import GPTConfig
from gptlab.data.reading import utf8_blocks
from gptlab.data.text import resolve_text, token_stream
from gptlab.fields import setting
from gptlab.loading import load_model
from gptlab.model import GPT
from gptlab.models import PRESETS, preset_config
from gptlab.tokenizer import Tokenizer, get_tokenizer, tokenizer_from_dict
from gptlab.training.lm import language_model_task
from gptlab.training.loop import TrainSettings, train
from gptlab.training.reports import OnEvent, RunSummary
from gptlab.training.runs import VERIFY, RunConfig, start_run

log = logging.getLogger(__name__)
FLOAT32 = 4  # bytes
TRAINING_COPIES = 4  # of each parameter while training: the weight, its gradient, AdamW's two moments


@dataclass
class PretrainConfig(RunConfig, task="pretrain", finetune=False):
    """Everything `gptlab pretrain` needs; saved as the run's replayable `config.json`."""

    SUMMARY = "pretrain a GPT on text files or built-in data sets (checkpoints, resume, plots)"
    DESCRIPTION = ("Pretrain a GPT with next-token prediction. Writes runs/<name>/ with config.json, metrics.jsonl, "
                   "loss.png, lr.png, checkpoints/last and checkpoints/best, summary.json. Run under "
                   "`torchrun --nproc_per_node=N` for data-parallel training.")

    data: list[str] = setting("registry names (the-verdict, tinyshakespeare) or text files")
    out: str = setting("run folder", "runs/pretrain")
    model: str = setting("preset to start from (random init), or a model to continue", "gpt-small")
    verify: bool = setting(VERIFY, True)
    n_layer: int | None = setting("override the preset's number of blocks", None)
    n_head: int | None = setting("override the preset's attention heads", None)
    n_embd: int | None = setting("override the preset's width", None)
    context_length: int | None = setting("override the preset's context length", None)
    dropout: float | None = setting("override the preset's dropout", None)
    tokenizer: str = setting("gpt2 (tiktoken), gpt2-scratch (gptlab's own BPE, same ids), char (built from the "
                             "data), or a trained tokenizer (its folder or JSON file)", "gpt2")
    val_fraction: float = setting("the last part of the token stream is validation", 0.1)
    sampling: str = setting("windows, random, or auto (random above 100k training tokens)", "auto")
    stride: int | None = setting("window stride in windows mode (default: the context length)", None)
    sample_prompt: str | None = setting("text sampled at each eval", "Every effort moves you")
    sample_tokens: int = setting("tokens of that sample (0 = no samples)", 30)
    train: TrainSettings = setting("optimisation; unset fields follow the recipe", factory=TrainSettings)

    def run(self, resume: bool = False, on_event: OnEvent | None = None) -> RunSummary:
        """Pretrain as this config says (see `run`)."""
        return run(self, resume, on_event)


def build_tokenizer(spec: str, sources: list[str]) -> Tokenizer:
    """A tokenizer by name or path (`get_tokenizer`); char takes its alphabet from the training texts,
    read a block at a time (a large corpus is never whole in memory)."""
    if spec != "char":
        return get_tokenizer(spec)
    chars: set[str] = set()
    for source in sources:
        for block in utf8_blocks(resolve_text(source)):
            chars.update(block)
    return get_tokenizer(spec, "".join(chars))


def build_model(config: PretrainConfig, seed: int) -> tuple[GPT, Tokenizer]:
    """A fresh preset (with overrides) and the chosen tokenizer, or an existing model to continue."""
    overrides = {k: getattr(config, k) for k in ("n_layer", "n_head", "n_embd", "context_length", "dropout")
                 if getattr(config, k) is not None}
    if config.model not in PRESETS or Path(config.model).exists():
        loaded = load_model(config.model, verify=config.verify)
        if overrides:
            raise ValueError(f"--model {config.model} is an existing model: its shape cannot be overridden")
        return loaded.model, loaded.tokenizer
    tokenizer = build_tokenizer(config.tokenizer, config.data)
    model_config = preset_config(config.model, vocab_size=tokenizer.vocab_size, **overrides)
    check_memory(model_config)
    return GPT(model_config, torch.Generator().manual_seed(seed)), tokenizer


def check_memory(config: GPTConfig) -> None:
    """Refuse, before allocating anything, a model whose training state does not fit in the memory free now
    (a context of 10^9 learned positions would ask torch for 64 GB per copy and fail in its allocator); the
    error says the largest context that fits, when the context is what does not."""
    with torch.device("meta"):  # counted, not allocated
        parameters = GPT(config).num_parameters()
    need, free = parameters * FLOAT32 * TRAINING_COPIES, psutil.virtual_memory().available
    if need <= free:
        return
    per_position = config.n_embd * FLOAT32 * TRAINING_COPIES if config.positions == "learned" else 0  # a wpe row
    rest = need - per_position * config.context_length
    largest = (free - rest) // per_position if per_position and free > rest else 0
    advice = (f"the largest context that fits is {largest:,} (--context-length)" if largest else
              "choose a smaller preset, or fewer or narrower blocks (--n-layer, --n-embd)")
    raise ValueError(f"{config.name} with a context of {config.context_length:,} tokens: training it takes about "
                     f"{need / 2**30:,.1f} GiB (float32 weights, gradients and AdamW's two moments) but "
                     f"{free / 2**30:,.1f} GiB of memory is free; {advice}")


def run(config: PretrainConfig, resume: bool = False, on_event: OnEvent | None = None) -> RunSummary:
    """Pretrain as `config` says; writes the run folder and returns its summary."""
    model, tokenizer = build_model(config, config.train.seed)
    if resume:
        saved = Path(config.out) / "checkpoints" / "last" / "config.json"
        if saved.is_file():  # a char vocabulary must come from the run, not be rebuilt
            tokenizer = tokenizer_from_dict(json.loads(saved.read_text())["tokenizer"], saved.parent)
    log.info("pretraining %s (%.2fM parameters)", config.model, model.num_parameters() / 1e6)
    task, settings = language_model_task(
        model, tokenizer, token_stream(config.data, tokenizer), config.train, CheckpointMeta(run=config.to_dict()),
        config.val_fraction, config.sampling, config.stride, config.sample_prompt, config.sample_tokens)
    out = start_run(config)
    return train(model, task, settings, out, resume=resume, on_event=on_event)
