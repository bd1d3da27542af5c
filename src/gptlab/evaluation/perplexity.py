"""Perplexity of a text under a model, with a sliding window for texts longer than the context.

Each window of `context` tokens predicts only the tokens no earlier window predicted, so every
token is scored exactly once, and (after the first window) with at least `context - stride`
tokens before it. `stride == context` gives independent windows: fastest, but tokens near each
window's start see little context, so perplexity is higher.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gptlab.evaluation.metrics import perplexity as perplexity_of
from gptlab.generation import TokenLogprob, allowed_logits
from gptlab.model import GPT


@dataclass(frozen=True)
class Window:
    """Inputs `tokens[start:end]`; the targets after position `first_scored - start` are scored."""

    start: int
    end: int
    first_scored: int  # first input position whose next token this window scores (absolute index)


def windows(n_tokens: int, context: int, stride: int) -> Iterator[Window]:
    """The windows that score tokens 1..n_tokens-1 exactly once."""
    if not 0 < stride <= context:
        raise ValueError(f"stride must be from 1 to the context length {context}, got {stride}")
    if n_tokens < 2:
        raise ValueError(f"perplexity needs at least 2 tokens, got {n_tokens}")
    scored_until = 0  # input positions < scored_until already had their next token scored
    start = 0
    while scored_until < n_tokens - 1:
        end = min(start + context, n_tokens - 1)
        yield Window(start, end, scored_until)
        scored_until = end
        start = min(start + stride, max(n_tokens - 1 - context, 0))  # the last window ends at the text's end


@dataclass(frozen=True)
class Perplexity:
    """The result: how many tokens were scored and their mean loss; perplexity is exp(loss)."""

    tokens: int  # tokens scored (all but the first)
    loss: float  # mean negative log-likelihood, nats per token

    @property
    def perplexity(self) -> float:
        return perplexity_of(self.loss)


@torch.inference_mode()
def perplexity(model: GPT, tokens: Sequence[int], stride: int | None = None, batch_size: int = 8,
               context: int | None = None) -> Perplexity:
    """Mean next-token loss and perplexity of `tokens`, windows of `context` (default the model's) tokens."""
    total, count = 0.0, 0
    for logits, targets in scored_logits(model, tokens, stride, batch_size, context):
        total += F.cross_entropy(logits, targets, reduction="sum").item()
        count += len(targets)
    return Perplexity(count, total / count)


@torch.inference_mode()
def token_logprobs(model: GPT, tokens: Sequence[int], top: int = 0, stride: int | None = None,
                   batch_size: int = 8, context: int | None = None,
                   vocab_size: int | None = None) -> list[TokenLogprob]:
    """Each token after the first: its log-probability given those before it (minus its loss in
    `perplexity`) and the `top` most likely alternatives, as the server's `echo` reports a prompt.
    With `vocab_size` (the tokenizer's), ids from there up are left out, as generation leaves them out."""
    scored: list[TokenLogprob] = []
    for logits, targets in scored_logits(model, tokens, stride, batch_size, context):
        logprobs = allowed_logits(logits, vocab_size).log_softmax(dim=-1)  # (N, V)
        picked = logprobs.gather(1, targets[:, None]).squeeze(1).tolist()  # (N,)
        best = logprobs.topk(top, dim=-1) if top else None
        for row, (target, logprob) in enumerate(zip(targets.tolist(), picked)):
            alternatives = zip(best.indices[row].tolist(), best.values[row].tolist()) if best is not None else ()
            scored.append(TokenLogprob(target, logprob, tuple(alternatives)))
    return scored


def scored_logits(model: GPT, tokens: Sequence[int], stride: int | None = None, batch_size: int = 8,
                  context: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Float32 logits (N, V) and their targets (N,) for each batch of windows: tokens 1..n-1, each once, in order."""
    context = context or model.config.context_length
    device = next(model.parameters()).device
    ids = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
    spans = list(windows(len(ids), context, stride or context))
    for first in range(0, len(spans), batch_size):
        batch = spans[first:first + batch_size]
        width = max(w.end - w.start for w in batch)
        inputs = torch.zeros(len(batch), width, dtype=torch.long)
        targets = torch.zeros(len(batch), width, dtype=torch.long)
        scored = torch.zeros(len(batch), width, dtype=torch.bool)
        for row, w in enumerate(batch):
            length = w.end - w.start
            inputs[row, :length] = ids[w.start:w.end]
            targets[row, :length] = ids[w.start + 1:w.end + 1]
            scored[row, w.first_scored - w.start:length] = True
        scored = scored.to(device)  # right padding is never scored, and causal attention never sees it
        logits = model(inputs.to(device), logits_at=scored)  # (N, V) for the scored positions only
        yield logits.float(), targets.to(device)[scored]
