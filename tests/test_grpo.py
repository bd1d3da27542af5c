"""GRPO's bookkeeping: which targets of a rollout train (the completion's, nothing else), how a step's
loss is weighted, pass@k, and the rows' seeds."""

from __future__ import annotations

import pytest
import torch

from gptlab.training.grpo import _collate, _RolloutBatch
from gptlab.training.rollouts import Sampled, pass_at_k, row_seeds


def test_a_rollout_trains_on_its_completion_tokens_only():
    sampled = [Sampled([1, 2, 3], [4, 5], "x"), Sampled([6, 7], [8, 9, 10], "y")]
    batch = _RolloutBatch(0, sampled, torch.tensor([0.5, -0.5]), [[0, 1]], {0: 0.25, 1: 1 / 6}, {})
    inputs, targets, mask, weights, advantages, rows = _collate(batch, [0, 1])
    assert inputs.tolist() == [[1, 2, 3, 4], [6, 7, 8, 9]]
    assert targets.tolist() == [[2, 3, 4, 5], [7, 8, 9, 10]]
    assert mask.tolist() == [[False, False, True, True], [False, True, True, True]]  # targets 4, 5 and 8, 9, 10
    assert torch.allclose(weights, torch.tensor([[0, 0, 0.25, 0.25], [0, 1 / 6, 1 / 6, 1 / 6]]))
    assert advantages.tolist() == [0.5, -0.5] and rows.tolist() == [0, 1]
    *_, empty_weights, _, empty_rows = _collate(batch, [])  # a share with nothing to learn: a row weighing 0
    assert empty_rows.tolist() == [0] and empty_weights.abs().sum() == 0


def test_pass_at_k_is_the_unbiased_estimate():
    correct = torch.tensor([[True, False, False, False], [False, False, False, False], [True, True, True, True]])
    assert pass_at_k(correct, 1) == pytest.approx((0.25 + 0 + 1) / 3)
    assert pass_at_k(correct, 2) == pytest.approx((1 - 3 / 6 + 0 + 1) / 3)  # 1 - C(3,2)/C(4,2) for one right in 4
    assert pass_at_k(correct, 4) == pytest.approx((1 + 0 + 1) / 3)
    with pytest.raises(ValueError, match="pass@5 needs between 1 and 4 samples"):
        pass_at_k(correct, 5)


def test_rows_draw_with_seeds_of_their_own_the_same_on_every_rerun():
    seeds = row_seeds(1337, 3, 32)
    assert seeds == row_seeds(1337, 3, 32) and len(set(seeds)) == 32
    assert not set(seeds) & set(row_seeds(1337, 4, 32)) and not set(seeds) & set(row_seeds(1338, 3, 32))
