"""Loss functions the tasks plug into the loop."""

from __future__ import annotations

from dataclasses import dataclass

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
    totals = token_logprobs(logits, targets, mask).sum(-1)  # (B,)
    return totals / mask.sum(-1) if mean else totals


def token_logprobs(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Log-probability (B, T) of each `mask`ed target, 0 elsewhere; `logits` as `sequence_logprobs` takes them."""
    if logits.dim() == 3:
        logits = logits[mask]  # (N, V)
    picked = logits.float().log_softmax(-1).gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)  # (N,)
    return torch.zeros(mask.shape, device=picked.device).masked_scatter(mask, picked)  # row-major, as selected


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


def group_advantages(rewards: Tensor, group_size: int, scale: bool = True) -> tuple[Tensor, Tensor]:
    """Advantages (N,) of N = groups x `group_size` rewards, and which groups (groups,) hold
    different rewards. Each completion is scored against its own group's mean, so a prompt's
    difficulty cancels out (GRPO); `scale` divides by the group's standard deviation as GRPO does,
    without it the mean is all that is taken away (Dr. GRPO: hard and easy prompts weigh alike).
    A group whose rewards are all equal teaches nothing: its advantages are 0."""
    groups = rewards.view(-1, group_size).double()  # (groups, G)
    centred = groups - groups.mean(dim=1, keepdim=True)
    spread = groups.std(dim=1, keepdim=True)  # (groups, 1), unbiased as in GRPO's paper and TRL
    varied = spread.squeeze(1) > 0
    if scale:
        centred = centred / spread.clamp_min(1e-4)
    return centred.masked_fill(~varied.unsqueeze(1), 0).flatten().float(), varied


def kl_k3(logprobs: Tensor, reference_logprobs: Tensor) -> Tensor:
    """Per-token KL(policy || reference) estimated from sampled tokens by Schulman's k3,
    exp(r - p) - (r - p) - 1: unbiased, never negative, and low-variance near the reference."""
    delta = reference_logprobs - logprobs
    return delta.exp() - delta - 1


@dataclass(frozen=True)
class PolicyLoss:
    """The clipped policy loss of a batch and what it is made of, per token averaged as weighted."""

    loss: Tensor  # scalar, with gradient
    kl: float  # mean k3 KL to the reference (0 without one)
    clip_fraction: float  # share of completion tokens whose ratio was clipped


def clipped_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, weights: Tensor,
                        clip: float = 0.2, reference_logprobs: Tensor | None = None,
                        kl_coef: float = 0.0) -> PolicyLoss:
    """PPO's clipped surrogate over completion tokens (GRPO's policy loss).

    `logprobs`, `old_logprobs` (of the policy that sampled the completions) and `weights` are (B, T);
    `advantages` (B,). Each token's loss is -min(ratio * A, clip(ratio, 1 - clip, 1 + clip) * A)
    (plus `kl_coef` times its k3 KL to the reference), and the loss is their sum weighted by
    `weights`, zero off the completion tokens: the weights choose the averaging (per completion,
    then over completions, as GRPO; or over all tokens, as Dr. GRPO and DAPO).
    """
    ratio = (logprobs - old_logprobs).exp()  # (B, T)
    gain = advantages.unsqueeze(1)
    per_token = -torch.minimum(ratio * gain, ratio.clamp(1 - clip, 1 + clip) * gain)
    kl = torch.zeros_like(per_token)
    if reference_logprobs is not None:
        kl = kl_k3(logprobs, reference_logprobs)
        per_token = per_token + kl_coef * kl
    counted = weights > 0
    tokens = counted.sum().clamp_min(1)
    clipped = ((ratio < 1 - clip) & (gain < 0)) | ((ratio > 1 + clip) & (gain > 0))
    loss = torch.where(counted, per_token * weights, torch.zeros_like(per_token)).sum()
    return PolicyLoss(loss, float(kl.detach()[counted].sum() / tokens),
                      float((clipped & counted).sum() / tokens))
