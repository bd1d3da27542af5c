"""Model configuration: the `GPTConfig` dataclass (presets live with their family in `gptlab.models`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gptlab.fields import settings_from_json

GPT2_VOCAB_SIZE = 50257


@dataclass
class GPTConfig:
    """Shape of a GPT-2-family model; everything the model builder needs and nothing else."""

    vocab_size: int = GPT2_VOCAB_SIZE  # number of token ids the embedding and LM head cover
    context_length: int = 1024  # longest sequence the learned position embedding covers
    n_layer: int = 12  # transformer blocks
    n_head: int = 12  # attention heads per block
    n_embd: int = 768  # width of the residual stream
    dropout: float = 0.0  # dropout on embeddings, attention weights and residual branches
    qkv_bias: bool = True  # GPT-2 has biases on the q/k/v projection
    tie_embeddings: bool = True  # LM head shares its weight with the token embedding
    layer_norm_eps: float = 1e-5  # epsilon of every LayerNorm
    num_classes: int | None = None  # set for a classifier: the head maps to classes (untied, biased)
    # Llama-family swaps (SmolLM2, Llama): each field's default is GPT-2's choice.
    n_kv_head: int | None = None  # key/value heads, fewer than n_head for grouped-query attention (None = n_head)
    positions: str = "learned"  # "learned" position embedding (GPT-2) or "rope" (rotary, Llama)
    rope_theta: float = 10000.0  # base frequency of the rotary embedding
    norm: str = "layernorm"  # "layernorm" (GPT-2) or "rmsnorm" (Llama)
    mlp: str = "gelu"  # "gelu" (GPT-2's tanh-GELU MLP) or "swiglu" (Llama's gated SiLU MLP)
    mlp_hidden: int | None = None  # width inside the MLP (None = 4 * n_embd)
    bias: bool = True  # biases on the attention output and MLP projections (Llama has none)
    name: str = field(default="custom", compare=False)  # preset name, for display only

    def __post_init__(self) -> None:
        problems = []
        for attr in ("vocab_size", "context_length", "n_layer", "n_head", "n_embd"):
            value = getattr(self, attr)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{attr} must be a positive integer, got {value!r}")
        if not problems and self.n_embd % self.n_head:
            problems.append(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"try n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}"
            )
        if not problems and self.n_head % self.kv_heads:
            problems.append(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        for attr, choices in (("positions", ("learned", "rope")), ("norm", ("layernorm", "rmsnorm")),
                              ("mlp", ("gelu", "swiglu"))):
            if getattr(self, attr) not in choices:
                problems.append(f"{attr} must be one of {', '.join(choices)}, got {getattr(self, attr)!r}")
        if self.num_classes is not None and self.num_classes < 2:
            problems.append(f"num_classes must be at least 2, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout!r}")
        for attr in ("layer_norm_eps", "rope_theta"):
            if not getattr(self, attr) > 0:
                problems.append(f"{attr} must be > 0, got {getattr(self, attr)!r}")
        for attr in ("n_kv_head", "mlp_hidden"):
            if getattr(self, attr) is not None and getattr(self, attr) < 1:
                problems.append(f"{attr} must be >= 1, got {getattr(self, attr)!r}")
        if problems:
            raise ValueError("invalid GPTConfig: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def hidden_size(self) -> int:
        """Width inside the MLP."""
        return self.mlp_hidden or 4 * self.n_embd

    @property
    def head_is_tied(self) -> bool:
        """The LM head reuses the token embedding (never for a classifier head)."""
        return self.tie_embeddings and self.num_classes is None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "model config") -> GPTConfig:
        """Inverse of `to_dict`; unknown keys are an error so a typo never passes silently, and so is
        a value of the wrong type (named with `where`, e.g. the file)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known) if isinstance(data, Mapping) else []
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s): {', '.join(unknown)}")
        return settings_from_json(cls, data, where)

