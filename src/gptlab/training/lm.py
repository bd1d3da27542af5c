"""Language-model training on a token stream: what pretraining is, and what classification's
`--pretrain-on-texts` does first with the training texts. Both tasks build on this, not on each other."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from torch import nn

from gptlab.checkpoint.meta import CheckpointMeta
from gptlab.checkpoint.native import write_model_files
from gptlab.data.text import WindowSampler, split_tokens
from gptlab.generation import GenerationSettings, generate
from gptlab.tokenizer import Tokenizer
from gptlab.training.loop import GENERIC, Task, TrainSettings, once_over
from gptlab.training.losses import lm_loss

log = logging.getLogger(__name__)
RANDOM_SAMPLING_ABOVE = 100_000  # tokens; smaller texts are walked in windows, as in the book


def language_model_task(model: nn.Module, tokenizer: Tokenizer, tokens: np.ndarray, settings: TrainSettings,
                        meta: CheckpointMeta, val_fraction: float = 0.1, sampling: str = "auto",
                        stride: int | None = None, sample_prompt: str | None = None,
                        sample_tokens: int = 0) -> tuple[Task, TrainSettings]:
    """Next-token prediction on `tokens` (its last `val_fraction` validates), and the settings to
    train it with: in windows mode no more eval batches than the validation windows.

    `sampling` is windows, random, or auto (random above 100k training tokens); `stride` the
    window stride in windows mode (default: the context length); a `sample_prompt` is continued
    for `sample_tokens` tokens at each evaluation.
    """
    settings = settings.over(GENERIC)
    train_tokens, val_tokens = split_tokens(tokens, val_fraction)
    ctx = model.config.context_length
    mode = sampling
    if mode == "auto":
        mode = "random" if len(train_tokens) > RANDOM_SAMPLING_ABOVE else "windows"
    train_data = _sampler("training", train_tokens, ctx, settings.batch_size, mode, stride, settings.seed)
    val_data = _sampler("validation", val_tokens, ctx, settings.batch_size, mode, None, settings.seed + 1,
                        shuffle=False)
    if mode == "windows":  # evaluate each validation window at most once
        settings = once_over(settings, val_data.num_windows)
    log.info("language-model training on %d training / %d validation tokens, %s sampling",
             len(train_tokens), len(val_tokens), mode)
    task = Task(
        train_batch=train_data.batch,
        val_batch=val_data.batch,
        loss=lambda m, batch: lm_loss(m(batch[0]), batch[1]),
        count_tokens=lambda batch: batch[1].numel(),
        write_model=lambda m, folder: write_model_files(m, tokenizer, folder, meta),
        sample=_continuation(tokenizer, sample_prompt, sample_tokens, val_tokens),
    )
    return task, settings


def _sampler(split: str, tokens: np.ndarray, ctx: int, batch: int, mode: str, stride: int | None,
             seed: int, shuffle: bool = True) -> WindowSampler:
    try:
        return WindowSampler(tokens, ctx, batch, mode, stride, seed, shuffle)
    except ValueError as err:
        raise ValueError(f"{split} split: {err}") from None


def _continuation(tokenizer: Tokenizer, prompt_text: str | None, max_new_tokens: int,
                  val_tokens: np.ndarray) -> Callable[[nn.Module], str] | None:
    """A function that continues a fixed prompt greedily, to watch the model learn."""
    if not prompt_text or max_new_tokens <= 0:
        return None
    try:
        prompt = tokenizer.encode(prompt_text)
    except ValueError:  # e.g. a char vocabulary without these characters
        prompt = [int(t) for t in val_tokens[:8]]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0).stopping_for(tokenizer)

    def sample(model: nn.Module) -> str:
        return tokenizer.decode(prompt + list(generate(model, prompt, settings)))

    return sample
