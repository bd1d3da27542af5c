"""GRPO's pieces: advantages within groups, the clipped policy loss against a hand-computed example,
the k3 KL estimator, and no gradient reaching the prompt."""

from __future__ import annotations

import math

import pytest
import torch

from gptlab.config import GPTConfig
from gptlab.model import GPT
from gptlab.training.losses import clipped_policy_loss, group_advantages, kl_k3, token_logprobs


def test_advantages_are_normalised_within_each_group_and_equal_groups_skipped():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0,  0.5, 0.5, 0.5, 0.5,  2.0, 0.0, 0.0, 0.0])
    advantages, varied = group_advantages(rewards, 4)
    assert varied.tolist() == [True, False, True]
    std = torch.tensor([1.0, 0.0, 0.0, 1.0]).std().item()  # unbiased: 0.5774
    assert advantages[:4].tolist() == pytest.approx([0.5 / std, -0.5 / std, -0.5 / std, 0.5 / std])
    assert advantages[4:8].tolist() == [0.0] * 4
    std = torch.tensor([2.0, 0.0, 0.0, 0.0]).std().item()
    assert advantages[8:].tolist() == pytest.approx([1.5 / std, -0.5 / std, -0.5 / std, -0.5 / std])
    unscaled, _ = group_advantages(rewards, 4, scale=False)  # Dr. GRPO: the mean taken away, nothing more
    assert unscaled.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0, 1.5, -0.5, -0.5, -0.5])


def test_k3_is_the_kl_estimate_and_zero_at_the_reference():
    logprobs = torch.log(torch.tensor([0.5, 0.2]))
    reference = torch.log(torch.tensor([0.25, 0.2]))
    assert kl_k3(logprobs, reference).tolist() == pytest.approx([0.5 - math.log(0.5) - 1, 0.0])
    torch.manual_seed(0)  # an unbiased estimate: the mean over samples of p approaches KL(p || q)
    p, q = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.4, 0.4, 0.2])
    draws = torch.multinomial(p, 200_000, replacement=True)
    exact = (p * (p / q).log()).sum()
    assert kl_k3(p.log()[draws], q.log()[draws]).mean().item() == pytest.approx(exact.item(), abs=3e-3)


def test_clipped_loss_matches_a_hand_computed_example():
    ratios = torch.tensor([[1.5, 1.1, 1.0], [0.5, 1.5, 1.0]])
    old = torch.full((2, 3), -2.0)
    logprobs = (old + ratios.log()).requires_grad_()
    advantages = torch.tensor([1.0, -1.0])
    weights = torch.tensor([[1 / 4, 1 / 4, 0], [1 / 6, 1 / 6, 1 / 6]])  # per completion, then over the two
    result = clipped_policy_loss(logprobs, old, advantages, weights, clip=0.2)
    # row 0 (A=+1): min(1.5, 1.2) -> -1.2, min(1.1, 1.1) -> -1.1, padding not counted: mean -1.15
    # row 1 (A=-1): min(-0.5, -0.8) -> 0.8, min(-1.5, -1.2) -> 1.5, min(-1, -1) -> 1.0: mean 1.1
    assert result.loss.item() == pytest.approx((-1.15 + 1.1) / 2)
    assert result.clip_fraction == pytest.approx(2 / 5) and result.kl == 0.0
    result.loss.backward()
    expected = torch.tensor([[0.0, -1.1 / 4, 0.0], [0.0, 1.5 / 6, 1.0 / 6]])  # clipped tokens pass no gradient
    assert torch.allclose(logprobs.grad, expected)


def test_kl_penalty_adds_to_the_loss_and_is_reported():
    logprobs, reference = torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[0.25, 0.5]]))
    weights = torch.tensor([[0.5, 0.5]])
    result = clipped_policy_loss(logprobs, logprobs, torch.tensor([0.0]), weights, reference_logprobs=reference,
                                 kl_coef=0.1)
    kl = 0.5 - math.log(0.5) - 1
    assert result.kl == pytest.approx(kl / 2) and result.loss.item() == pytest.approx(0.1 * kl / 2)


def test_the_loss_sends_no_gradient_to_prompt_positions():
    model = GPT(GPTConfig(vocab_size=100, context_length=16, n_embd=16, n_head=2, n_layer=2))
    inputs = torch.randint(0, 100, (2, 10))
    targets = torch.roll(inputs, -1, dims=1)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, 6:9], mask[1, 4:10] = True, True  # completion tokens; the rest is prompt (and padding)
    logits = model(inputs)
    logits.retain_grad()
    logprobs = token_logprobs(logits, targets, mask)
    weights = mask.float() / mask.sum(1, keepdim=True) / 2
    result = clipped_policy_loss(logprobs, logprobs.detach() - 0.05, torch.tensor([1.0, -1.0]), weights)
    result.loss.backward()
    per_position = logits.grad.abs().sum(-1)  # (B, T)
    assert per_position[~mask].abs().max().item() == 0.0
    assert (per_position[mask] > 0).all()
    assert torch.allclose(token_logprobs(model(inputs, logits_at=mask), targets, mask), logprobs, atol=1e-5)
