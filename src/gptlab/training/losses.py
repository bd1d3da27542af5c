"""Loss functions the tasks plug into the loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.data.instruction import IGNORE_INDEX


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy over (B, T, V) logits and (B, T) targets."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)


def lm_loss_on_targets(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """`lm_loss` of `model(inputs)`, with logits computed only where a target counts (not `IGNORE_INDEX`)."""
    keep = targets != IGNORE_INDEX  # (B, T)
    return F.cross_entropy(model(inputs, logits_at=keep).float(), targets[keep])


def sequence_logprobs(logits: Tensor, targets: Tensor, mask: Tensor, mean: bool = True) -> Tensor:
    """Log-probability (B,) of each row's `mask`ed targets: their mean over the row's selected
    tokens (the book's choice: a long response is not penalised for its length) or their sum.

    `targets` and `mask` are (B, T); `logits` are (B, T, V), or (N, V) for only the N selected
    positions, in row-major order, as `model(inputs, logits_at=mask)` returns them.
    """
    if logits.dim() == 3:
        logits = logits[mask]  # (N, V)
    picked = logits.float().log_softmax(-1).gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)  # (N,)
    rows = mask.nonzero()[:, 0]  # (N,): the row of each selected position
    totals = torch.zeros(mask.shape[0], device=picked.device).index_add(0, rows, picked)  # (B,)
    return totals / mask.sum(-1) if mean else totals


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, reference_chosen: Tensor,
             reference_rejected: Tensor, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """Direct Preference Optimization (Rafailov et al. 2023) for (B,) response log-probs.

    Returns the mean loss -log σ(β((πc - rc) - (πr - rr))) and each pair's chosen and rejected
    reward β(π - r), detached: how much likelier than the frozen reference the policy has made
    the response. The loss only falls as the chosen reward pulls ahead of the rejected one.
    """
    chosen, rejected = policy_chosen - reference_chosen, policy_rejected - reference_rejected
    loss = -F.logsigmoid(beta * (chosen - rejected)).mean()
    return loss, beta * chosen.detach(), beta * rejected.detach()
