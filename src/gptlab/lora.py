"""LoRA: fine-tune a low-rank update of each projection instead of the projection itself.

`W x` becomes `W x + (alpha / rank) * B A x` with A (rank, in) and B (out, rank); only A and B
train. B starts at zero, so a freshly wrapped model computes exactly what it did before. The
wrapped layers keep their parameter names (`h.0.attn.c_attn.weight`) and add `lora_A` /
`lora_B` beside them, so the adapters load onto a rebuilt base by name, and `merge_lora` folds
the update back into `W` for inference.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.fields import setting
from gptlab.linear import Linear

# Every projection of every block: attention's and the MLP's. A mixture's experts (`mlp.experts.{e}.c_fc`, ...)
# and router match none of these endings: on a mixture-of-experts model LoRA adapts attention only.
DEFAULT_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


@dataclass(frozen=True)
class LoRASettings:
    """How a fine-tune wraps the model: the flags of every task that trains with `--train-layers lora`,
    and (with `base`) the record a LoRA checkpoint keeps so its adapters load onto the right weights."""

    rank: int = setting("with --train-layers lora: rank of the adapters", 8)
    alpha: float = setting("with --train-layers lora: the adapters' update is scaled by alpha / rank", 16.0)
    targets: tuple[str, ...] = setting("projections that get adapters", DEFAULT_TARGETS, flag=False)
    base: str | None = setting("the exact base checkpoint (set when saved)", None, flag=False)
    base_sha256: str | None = setting("the sha256 of the base's weight files (set when saved)", None, flag=False)

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        object.__setattr__(self, "targets", tuple(self.targets))  # a JSON list reads back as a tuple


class LoRALinear(Linear):
    """A linear layer (its weight and bias, shared, frozen) plus a trainable rank-`rank` update."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator | None = None) -> None:
        """Adapters over `base`: A drawn from `generator` (a CPU one; None: torch's global RNG), B zero."""
        nn.Module.__init__(self)
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # the same tensors: memory layout kept
        self.rank, self.alpha = rank, alpha
        device, dtype = base.weight.device, base.weight.dtype
        lora_a = torch.empty(rank, self.in_features, dtype=dtype)  # drawn on the CPU, as `generator` is
        nn.init.kaiming_uniform_(lora_a, a=math.sqrt(5), generator=generator)  # as nn.Linear initialises its weight
        self.lora_A = nn.Parameter(lora_a.to(device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=device, dtype=dtype))
        self.active = True  # False: the base layer alone (`adapters_off`)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def forward(self, x: Tensor) -> Tensor:
        if not self.active:
            return super().forward(x)
        return super().forward(x) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale

    def delta(self) -> Tensor:
        """The update (out, in) this adapter adds to the weight."""
        return (self.lora_B @ self.lora_A) * self.scale


def apply_lora(model: nn.Module, settings: LoRASettings, generator: torch.Generator | None = None) -> LoRASettings:
    """Wrap every linear layer whose name ends with one of the targets, and freeze everything else.

    Returns `settings`, to save with the model (`"lora"` in its config.json), so loading can
    rebuild the same wrappers before merging them. The adapters start from `generator`'s draws.
    """
    rank, alpha, targets = settings.rank, settings.alpha, settings.targets
    wrapped = 0
    model.requires_grad_(False)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and not isinstance(module, LoRALinear) and name.endswith(tuple(targets)):
            _replace(model, name, LoRALinear(module, rank, alpha, generator))
            wrapped += 1
    if not wrapped:
        raise ValueError(f"no linear layer matches the LoRA targets {list(targets)}")
    return settings


@contextmanager
def adapters_off(model: nn.Module) -> Iterator[nn.Module]:
    """`model` computing as its base, every adapter skipped, for the duration: the frozen reference a
    LoRA fine-tune is compared with (GRPO's KL), without a second copy of the weights."""
    layers = [module for module in model.modules() if isinstance(module, LoRALinear)]
    for layer in layers:
        layer.active = False
    try:
        yield model
    finally:
        for layer in layers:
            layer.active = True


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight and put plain linear layers back (in place)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            with torch.no_grad():
                module.weight += module.delta()
            plain = Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
            plain.weight, plain.bias = module.weight, module.bias
            _replace(model, name, plain)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only the adapter tensors: what a LoRA fine-tune learned, a small fraction of the model."""
    return {name: tensor for name, tensor in model.state_dict().items() if is_lora_key(name)}


def is_lora_key(name: str) -> bool:
    """Whether a state-dict key is an adapter tensor (not a weight of the base model)."""
    return name.endswith((".lora_A", ".lora_B"))


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
