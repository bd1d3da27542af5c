"""Pretraining: next-token prediction on plain text, through the shared loop."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gptlab.checkpoint import CheckpointMeta, load_model
from gptlab.checkpoint.native import write_model_files
from gptlab.data.reading import read_utf8
from gptlab.data.text import WindowSampler, resolve_text, split_tokens, token_stream
from gptlab.models import PRESETS, preset_config
from gptlab.generation import GenerationSettings, generate
from gptlab.model import GPT
from gptlab.tokenizer import CharTokenizer, GPT2Tokenizer, Tokenizer, tokenizer_from_dict
from gptlab.training.loop import RunConfig, Task, TrainSettings, once_over, train
from gptlab.training.losses import lm_loss

log = logging.getLogger(__name__)
RANDOM_SAMPLING_ABOVE = 100_000  # tokens; smaller texts are walked in windows, as in the book


@dataclass
class PretrainConfig(RunConfig):
    """Everything `gptlab pretrain` needs; saved as the run's replayable `config.json`."""

    TASK = "pretrain"

    data: list[str]  # registry names (the-verdict, tinyshakespeare) or text files
    out: str = "runs/pretrain"  # run folder
    model: str = "gpt-small"  # preset to start from (random init), or a model to continue
    n_layer: int | None = None  # override the preset's number of blocks
    n_head: int | None = None  # override the preset's attention heads
    n_embd: int | None = None  # override the preset's width
    context_length: int | None = None  # override the preset's context length
    dropout: float | None = None  # override the preset's dropout
    tokenizer: str = "gpt2"  # gpt2, char (built from the data), or a tokenizer JSON file
    val_fraction: float = 0.1  # the last part of the token stream is validation
    sampling: str = "auto"  # windows, random, or auto (random above 100k training tokens)
    stride: int | None = None  # window stride in windows mode (default: the context length)
    sample_prompt: str | None = "Every effort moves you"  # text sampled at each eval
    sample_tokens: int = 30  # tokens of that sample (0 = no samples)
    train: TrainSettings = field(default_factory=TrainSettings)

    @staticmethod
    def default_train(given: dict[str, Any]) -> TrainSettings:
        """Optimiser defaults (the same for every pretraining run)."""
        return TrainSettings()


def build_tokenizer(spec: str, sources: list[str]) -> Tokenizer:
    """gpt2, char (alphabet of the training texts), or a JSON file written by `to_dict`."""
    if spec == "gpt2":
        return GPT2Tokenizer()
    if spec == "char":
        return CharTokenizer.from_text("".join(read_utf8(resolve_text(s)) for s in sources))
    path = Path(spec)
    if path.is_file():
        return tokenizer_from_dict(json.loads(path.read_text(encoding="utf-8")))
    raise ValueError(f"--tokenizer {spec!r}: expected gpt2, char, or a tokenizer JSON file")


def build_model(config: PretrainConfig, seed: int) -> tuple[GPT, Tokenizer]:
    """A fresh preset (with overrides) and the chosen tokenizer, or an existing model to continue."""
    overrides = {k: getattr(config, k) for k in ("n_layer", "n_head", "n_embd", "context_length", "dropout")
                 if getattr(config, k) is not None}
    if config.model not in PRESETS or Path(config.model).exists():
        loaded = load_model(config.model)
        if overrides:
            raise ValueError(f"--model {config.model} is an existing model: its shape cannot be overridden")
        return loaded.model, loaded.tokenizer
    tokenizer = build_tokenizer(config.tokenizer, config.data)
    torch.manual_seed(seed)
    model_config = preset_config(config.model, vocab_size=tokenizer.vocab_size, **overrides)
    return GPT(model_config), tokenizer


def run(config: PretrainConfig, resume: bool = False, on_event=None) -> dict[str, Any]:
    """Pretrain as `config` says; writes the run folder and returns its summary."""
    settings = config.train
    model, tokenizer = build_model(config, settings.seed)
    if resume:
        saved = Path(config.out) / "checkpoints" / "last" / "config.json"
        if saved.is_file():  # a char vocabulary must come from the run, not be rebuilt
            tokenizer = tokenizer_from_dict(json.loads(saved.read_text())["tokenizer"])
    tokens = token_stream(config.data, tokenizer)
    train_tokens, val_tokens = split_tokens(tokens, config.val_fraction)
    ctx = model.config.context_length
    mode = config.sampling
    if mode == "auto":
        mode = "random" if len(train_tokens) > RANDOM_SAMPLING_ABOVE else "windows"
    train_data = _sampler("training", train_tokens, ctx, settings.batch_size, mode, config.stride, settings.seed)
    val_data = _sampler("validation", val_tokens, ctx, settings.batch_size, mode, None, settings.seed + 1,
                        shuffle=False)
    if mode == "windows":  # evaluate each validation window at most once
        settings = once_over(settings, val_data.num_windows)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    task = Task(
        train_batch=train_data.batch,
        val_batch=val_data.batch,
        loss=lambda m, batch: lm_loss(m(batch[0]), batch[1]),
        count_tokens=lambda batch: batch[1].numel(),
        write_model=lambda m, folder: write_model_files(m, tokenizer, folder, CheckpointMeta(run=config.to_dict())),
        sample=_sampler_text(tokenizer, config, val_tokens),
    )
    log.info("pretraining %s (%.2fM parameters) on %d training / %d validation tokens, %s sampling",
             config.model, model.num_parameters() / 1e6, len(train_tokens), len(val_tokens), mode)
    return train(model, task, settings, out, resume=resume, on_event=on_event)


def _sampler(split: str, tokens: np.ndarray, ctx: int, batch: int, mode: str, stride: int | None,
             seed: int, shuffle: bool = True) -> WindowSampler:
    try:
        return WindowSampler(tokens, ctx, batch, mode, stride, seed, shuffle)
    except ValueError as err:
        raise ValueError(f"{split} split: {err}") from None


def _sampler_text(tokenizer: Tokenizer, config: PretrainConfig, val_tokens: np.ndarray):
    """A function that continues a fixed prompt greedily, to watch the model learn."""
    if not config.sample_prompt or config.sample_tokens <= 0:
        return None
    try:
        prompt = tokenizer.encode(config.sample_prompt)
    except ValueError:  # e.g. a char vocabulary without these characters
        prompt = [int(t) for t in val_tokens[:8]]
    settings = GenerationSettings(max_new_tokens=config.sample_tokens, temperature=0).stopping_for(tokenizer)

    def sample(model: nn.Module) -> str:
        return tokenizer.decode(prompt + list(generate(model, prompt, settings)))

    return sample

