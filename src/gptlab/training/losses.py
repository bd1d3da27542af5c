"""Loss functions the tasks plug into the loop."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.data.instruction import IGNORE_INDEX



def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy over (B, T, V) logits and (B, T) targets."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)


def lm_loss_on_targets(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """`lm_loss` of `model(inputs)`, with logits computed only where a target counts (not `IGNORE_INDEX`)."""
    keep = targets != IGNORE_INDEX  # (B, T)
    return F.cross_entropy(model(inputs, positions=keep).float(), targets[keep])
