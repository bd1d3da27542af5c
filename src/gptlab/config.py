"""Model configuration: the `GPTConfig` dataclass (presets live with their family in `gptlab.models`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gptlab.fields import settings_from_json

GPT2_VOCAB_SIZE = 50257


MLPS = ("gelu", "gelu_exact", "swiglu", "geglu")
NORM_POSITIONS = ("pre", "post", "both")
QK_NORMS = ("none", "head", "full")
ROPE_SCALINGS = ("linear", "llama3", "factors")


@dataclass
class RopeScaling:
    """How rotary positions are stretched past the context a model was first trained at."""

    # "linear" (every frequency / factor), "llama3" (Llama 3.1's per-wavelength blend) or "factors" (each
    # frequency / its own factor: how llama.cpp stores Llama 3.1's blend, as a rope_freqs tensor in GGUF files)
    kind: str = "linear"
    factor: float = 1.0  # how much longer the new context is
    low_freq_factor: float = 1.0  # llama3: wavelengths above original_context / this are scaled fully
    high_freq_factor: float = 4.0  # llama3: wavelengths below original_context / this are kept
    original_context: int = 8192  # llama3: the context the model was pretrained at
    factors: tuple[float, ...] = ()  # factors: one divisor per rotary frequency

    def __post_init__(self) -> None:
        if self.kind not in ROPE_SCALINGS:
            raise ValueError(f"rope scaling kind must be one of {', '.join(ROPE_SCALINGS)}, got {self.kind!r}")
        if not self.factor > 0 or not self.high_freq_factor > self.low_freq_factor > 0:
            raise ValueError("rope scaling needs factor > 0 and high_freq_factor > low_freq_factor > 0")
        if (self.kind == "factors") != bool(self.factors) or not all(f > 0 for f in self.factors):
            raise ValueError("rope scaling 'factors' (and only it) needs one positive factor per rotary frequency")


@dataclass
class Experts:
    """A mixture-of-experts MLP: a router picks `active` of `count` expert MLPs for each token."""

    count: int  # expert MLPs per block
    active: int  # experts each token goes through (top-k)
    hidden: int  # width inside each expert
    normalize: bool = True  # rescale the chosen experts' router weights to sum to 1 (Qwen3-MoE's norm_topk_prob)

    def __post_init__(self) -> None:
        if not 1 <= self.active <= self.count or self.hidden < 1:
            raise ValueError(f"experts need 1 <= active <= count and hidden >= 1, got {self}")


@dataclass
class GPTConfig:
    """Shape of a model and the building blocks it uses; everything the model builder needs and nothing else.

    Each field past `num_classes` swaps one block of GPT-2 for another family's; its default is
    GPT-2's choice, and `gptlab.models` says which swaps make which family.
    """

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
    n_kv_head: int | None = None  # key/value heads, fewer than n_head for grouped-query attention (None = n_head)
    head_size: int | None = None  # width of one attention head (None = n_embd / n_head; Qwen3 and Gemma differ)
    positions: str = "learned"  # "learned" position embedding (GPT-2) or "rope" (rotary, Llama)
    rope_theta: float = 10000.0  # base frequency of the rotary embedding
    rope_scaling: RopeScaling | None = None  # stretched rotary positions (Llama 3.1 and later); None: plain
    rotary_fraction: float = 1.0  # share of each head's dimensions that rotate (partial rotary: Pythia 0.25)
    norm: str = "layernorm"  # "layernorm" (GPT-2) or "rmsnorm" (Llama)
    norm_position: str = "pre"  # norms "pre" (before each branch), "post" (on its output, OLMo 2), "both" (Gemma 3)
    parallel_residual: bool = False  # attention and MLP read the same input, both added at once (GPT-NeoX)
    qk_norm: str = "none"  # RMSNorm of queries and keys: "none", "head" (each head, Qwen3), "full" (all heads, OLMo 2)
    attn_scale: float | None = None  # factor on attention scores (None = 1 / sqrt(head width); Gemma 3 sets it)
    sliding_window: int | None = None  # keys a windowed block's query sees, itself included (Mistral, Gemma 3)
    sliding_layers: tuple[int, ...] | None = None  # the blocks that use the window (None: all, when it is set)
    local_rope_theta: float | None = None  # rotary base of the windowed blocks (Gemma 3); None: rope_theta
    embedding_scale: float = 1.0  # token embeddings are multiplied by this (Gemma: sqrt(n_embd))
    mlp: str = "gelu"  # "gelu" (GPT-2's tanh GELU), "gelu_exact" (erf GELU), "swiglu" (Llama), "geglu" (Gemma)
    mlp_hidden: int | None = None  # width inside the MLP (None = 4 * n_embd)
    experts: Experts | None = None  # a mixture of expert MLPs in every block (Qwen3-MoE); None: one MLP
    bias: bool = True  # biases on the attention output and MLP projections (Llama has none)
    name: str = field(default="custom", compare=False)  # preset name, for display only
    # the family it belongs to (gptlab.models; its Hugging Face form on export); None: the family whose blocks it has
    family: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        problems = []
        for attr in ("vocab_size", "context_length", "n_layer", "n_head", "n_embd"):
            value = getattr(self, attr)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{attr} must be a positive integer, got {value!r}")
        if not problems and self.head_size is None and self.n_embd % self.n_head:
            problems.append(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"try n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}"
            )
        if not problems and self.n_head % self.kv_heads:
            problems.append(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        for attr, choices in (("positions", ("learned", "rope")), ("norm", ("layernorm", "rmsnorm")),
                              ("mlp", MLPS), ("norm_position", NORM_POSITIONS), ("qk_norm", QK_NORMS)):
            if getattr(self, attr) not in choices:
                problems.append(f"{attr} must be one of {', '.join(choices)}, got {getattr(self, attr)!r}")
        if self.num_classes is not None and self.num_classes < 2:
            problems.append(f"num_classes must be at least 2, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout!r}")
        for attr in ("layer_norm_eps", "rope_theta", "embedding_scale", "attn_scale", "local_rope_theta"):
            if getattr(self, attr) is not None and not getattr(self, attr) > 0:
                problems.append(f"{attr} must be > 0, got {getattr(self, attr)!r}")
        if not 0.0 < self.rotary_fraction <= 1.0:
            problems.append(f"rotary_fraction must be in (0, 1], got {self.rotary_fraction!r}")
        if self.parallel_residual and self.norm_position != "pre":
            problems.append("parallel_residual needs norm_position 'pre'")
        if self.sliding_layers is not None and not all(0 <= i < self.n_layer for i in self.sliding_layers):
            problems.append(f"sliding_layers must be block numbers 0..{self.n_layer - 1}, got {self.sliding_layers}")
        for attr in ("n_kv_head", "mlp_hidden", "head_size", "sliding_window"):
            if getattr(self, attr) is not None and getattr(self, attr) < 1:
                problems.append(f"{attr} must be >= 1, got {getattr(self, attr)!r}")
        if problems:
            raise ValueError("invalid GPTConfig: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.head_size or self.n_embd // self.n_head

    @property
    def rotary_dims(self) -> int:
        """How many of each head's dimensions rotate (the first ones; an even number)."""
        return int(self.head_dim * self.rotary_fraction) // 2 * 2

    def windowed(self, layer: int) -> bool:
        """Whether block `layer` attends over a sliding window of keys."""
        return self.sliding_window is not None and (self.sliding_layers is None or layer in self.sliding_layers)

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
    def from_dict(cls, data: Any, where: str = "model config") -> GPTConfig:
        """Inverse of `to_dict`, from a JSON value (checked here: it comes from files); unknown keys are an
        error so a typo never passes silently, and so is a value of the wrong type (named with `where`)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known) if isinstance(data, Mapping) else []
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s): {', '.join(unknown)}")
        return settings_from_json(cls, data, where)

