"""GPT-2, written from scratch, with GPT-2/Hugging Face parameter names, and the named blocks other
families swap in (rotary positions and their scalings, RMSNorm, gated MLPs, grouped-query attention,
QK-norm, sliding windows, post-norms, parallel residuals, a mixture of experts).

Parameter names follow GPT-2 (`wte`, `wpe`, `h.{i}.attn.c_attn`, ...) so importing the published
weights is a loop over keys, not a table of renames (see `checkpoint/hf.py`). Which blocks a model
uses is its `GPTConfig`'s business; which configs make a family is `gptlab.models`'.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.config import GPTConfig, RopeScaling
from gptlab.linear import Linear

ATTENTION_IMPLS = ("sdpa", "math")
# Inference on CPU in bf16: the explicit path takes this many queries at a time, so that a block's
# scores stay in the caches, up to MAX_BLOCKED_KEYS keys (beyond, the fused kernel is as fast).
QUERY_BLOCK = 128
MAX_BLOCKED_KEYS = 2048
# Every projection whose memory layout matters for speed: a block's four (attn.c_attn, attn.c_proj,
# mlp.c_fc, mlp.c_proj) and a mixture's experts'
# (mlp.experts.{e}.c_fc.weight, ...).
FAST_LAYOUT_WEIGHTS = ("c_attn.weight", "c_proj.weight", "c_fc.weight")


@dataclass
class KVCache:
    """Preallocated keys/values for every layer, one row (slot) per sequence, written by position.

    The cache keeps no lengths: each row is at its own position, which the caller tracks and passes
    in (`GPT.prefill` for a prompt into one slot, `GPT.decode_step` for one token per row), so rows
    join, run and leave independently and no prompt needs padding.
    """

    keys: list[Tensor]  # per layer: (B, n_kv, max_len, hs)
    values: list[Tensor]  # per layer: (B, n_kv, max_len, hs)

    @classmethod
    def allocate(
        cls,
        config: GPTConfig,
        batch_size: int,
        max_len: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> KVCache:
        """Allocate a cache for `batch_size` sequences of up to `max_len` tokens."""
        max_len = max_len or config.context_length
        shape = (batch_size, config.kv_heads, max_len, config.head_dim)
        return cls(
            keys=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)],
            values=[torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)],
        )

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]

    def copy_prefix(self, source: int, targets: Sequence[int], length: int) -> None:
        """Give rows `targets` the first `length` places of row `source` (a prompt prefix they share)."""
        rows = torch.tensor(list(targets), dtype=torch.long, device=self.keys[0].device)
        for buf in [*self.keys, *self.values]:
            buf[rows, :, :length] = buf[source : source + 1, :, :length]

    def resized(self, max_len: int) -> KVCache:
        """A cache of `max_len` places per row holding this one's contents (grown, or cut to `max_len`)."""
        keep = min(max_len, self.max_len)

        def copy(old: Tensor) -> Tensor:
            new = old.new_zeros(*old.shape[:2], max_len, old.shape[3])  # (B, n_kv, max_len, hs)
            new[:, :, :keep] = old[:, :, :keep]
            return new

        return KVCache(keys=[copy(k) for k in self.keys], values=[copy(v) for v in self.values])


@dataclass(frozen=True)
class SlotSpan:
    """Where a prefill writes: T tokens into each of some rows (`slots`), at positions start .. start + T - 1."""

    slots: Tensor  # (n,) long: the cache row of each prefilled sequence
    start: int

    def store(self, buf: Tensor, new: Tensor) -> Tensor:
        """Write `new` (n, n_kv, T, hs) into those rows of `buf` (B, n_kv, L, hs); the rows' keys so far
        (n, n_kv, start + T, hs): `new` itself when the rows start empty."""
        end = self.start + new.shape[2]
        buf[self.slots, :, self.start : end] = new
        return new if self.start == 0 else buf[self.slots, :, :end]


@dataclass(frozen=True)
class RowPositions:
    """Where a decode step writes: one token per row, row b at `positions[b]`; every row then attends
    over the first `span` places (the mask hides those past its position), so shapes never change."""

    positions: Tensor  # (R,) long, on the model's device
    span: int

    def store(self, buf: Tensor, new: Tensor) -> Tensor:
        """Write `new` (R, n_kv, 1, hs) into rows 0..R-1 of `buf`; their first `span` places (R, n_kv, span, hs)."""
        R, n_kv, _, hs = new.shape
        buf[:R].scatter_(2, self.positions.view(R, 1, 1, 1).expand(R, n_kv, 1, hs), new)
        return buf[:R, :, : self.span]


CacheWrite = SlotSpan | RowPositions


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension with a learned scale and shift."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """Llama's norm: scale by the root mean square (no centring, no shift), computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def make_norm(config: GPTConfig, dim: int | None = None) -> nn.Module:
    """The norm the config names (GPT-2's LayerNorm or Llama's RMSNorm) over `dim` (default: the width)."""
    return (RMSNorm if config.norm == "rmsnorm" else LayerNorm)(dim or config.n_embd, config.layer_norm_eps)


def inverse_frequencies(dims: int, theta: float, scaling: RopeScaling | None = None) -> Tensor:
    """The rotary embedding's angle per position for each of `dims` / 2 dimension pairs (float32, on the CPU
    even while a model is built on the meta device: `GPT` computes them once and keeps them)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, dims, 2, dtype=torch.float32, device="cpu") / dims)
    if scaling is None:
        return inv_freq
    if scaling.kind == "linear":  # positions / factor: every wavelength stretched alike
        return inv_freq / scaling.factor
    if scaling.kind == "factors":  # each frequency divided by its own factor, as a GGUF file lists them
        if len(scaling.factors) != len(inv_freq):
            raise ValueError(f"{len(scaling.factors)} rotary factors for {len(inv_freq)} rotary frequencies")
        return inv_freq / torch.tensor(scaling.factors, dtype=torch.float32, device="cpu")
    # llama3: long wavelengths (beyond the original context / low_freq_factor) are stretched fully, short
    # ones (below original / high_freq_factor) kept, and those between blended smoothly
    wavelength = 2 * math.pi / inv_freq
    blend = (scaling.original_context / wavelength - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor)
    blended = (1 - blend) * inv_freq / scaling.factor + blend * inv_freq
    long = wavelength > scaling.original_context / scaling.low_freq_factor
    short = wavelength < scaling.original_context / scaling.high_freq_factor
    return torch.where(long, inv_freq / scaling.factor, torch.where(short, inv_freq, blended))


def rotary(positions: Tensor, inv_freq: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos and sin (B or 1, 1, T, rotary dims) of the rotary embedding at `positions` (B or 1, T)."""
    angles = positions.float()[..., None] * inv_freq.to(positions.device)  # (B, T, rotary dims / 2)
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # (B, 1, T, rotary dims): halves, as in HF Llama
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each (first half, second half) pair of the first rotary dims of `x` (B, nh, T, hs) by its
    position's angle; a head's other dimensions (partial rotary) pass unchanged."""
    dims = cos.shape[-1]
    if dims < x.shape[-1]:
        return torch.cat([apply_rotary(x[..., :dims], cos, sin), x[..., dims:]], dim=-1)
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


def sliding_window_mask(positions: Tensor, span: int, window: int) -> Tensor:
    """(B or 1, 1, T, span) bool: query at `positions` (B or 1, T) sees the keys at positions p - window + 1 .. p."""
    keys = torch.arange(span, device=positions.device)
    offset = positions[..., None] - keys  # (B, T, span): how far back each key lies
    return ((offset >= 0) & (offset < window))[:, None]


def attend(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float, impl: str, grouped: bool = False,
    scale: float | None = None,
) -> Tensor:
    """Scaled dot-product attention of T queries over S >= T keys.

    `q` has nh heads, `k`/`v` nh or fewer (grouped-query attention: each key/value head serves
    nh / n_kv consecutive query heads, read in place, never copied; `grouped` says so, from the
    config, a plain bool even under torch.compile's symbolic shapes). `mask` (bool, True = may
    attend) broadcasts to (B, nh, T, S); when it is None the queries are the last T positions of
    the keys and attention is causal. `scale` multiplies the scores (None: 1 / sqrt(hs)).
    """
    T, S = q.shape[-2], k.shape[-2]
    if impl == "sdpa" and q.device.type == "cpu" and q.dtype == torch.bfloat16:  # BENCHMARKS.md, "Attention"
        if T == 1:  # PyTorch's fused CPU kernel is 3-6x faster in float32 than in bf16, even counting the casts
            return attend(q.float(), k.float(), v.float(), mask, dropout, impl, grouped, scale).to(q.dtype)
        # and the explicit path beats it in bf16 over a few hundred keys (forward and backward), or, at
        # inference, over up to a few thousand keys taken QUERY_BLOCK queries at a time (prefill)
        if S <= 256 or (S <= MAX_BLOCKED_KEYS and not q.requires_grad):
            impl = "math"
    if impl == "sdpa":
        is_causal = mask is None and T > 1
        if is_causal and T != S:
            mask = causal_mask(T, S, q.device)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal and T == S,
            enable_gqa=grouped, scale=scale,
        )
    if T <= QUERY_BLOCK or q.requires_grad:
        return explicit_attention(q, k, v, mask, dropout, scale)
    blocks = []
    for start in range(0, T, QUERY_BLOCK):
        rows = q[:, :, start : start + QUERY_BLOCK]
        if mask is None:  # causal: the block's last query sees keys up to its own position, no further
            end = S - T + start + rows.shape[-2]
            blocks.append(explicit_attention(rows, k[:, :, :end], v[:, :, :end], None, dropout, scale))
        else:
            rows_mask = mask if mask.shape[-2] == 1 else mask[..., start : start + QUERY_BLOCK, :]
            blocks.append(explicit_attention(rows, k, v, rows_mask, dropout, scale))
    return torch.cat(blocks, dim=-2)


def explicit_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float, scale: float | None = None
) -> Tensor:
    """softmax(q k^T * scale + mask) v (scale 1 / sqrt(hs) unless given), the query heads that share a
    key/value head stacked as rows of one product with it (a plain batched matmul: broadcasting the keys
    over the group copies them)."""
    B, nh, T, hs = q.shape
    n_kv, S = k.shape[1], k.shape[2]
    group = nh // n_kv
    att = (q.reshape(B, n_kv, group * T, hs) @ k.transpose(-2, -1)).view(B, n_kv, group, T, S)
    att = att.mul_(1.0 / math.sqrt(hs) if scale is None else scale)
    if mask is None:  # causal: every query sees the first S - T keys; only the last T need a mask
        att[..., S - T :].masked_fill_(~causal_mask(T, T, q.device), float("-inf"))
    else:
        att = att.masked_fill_(~(mask[:, :, None] if mask.dim() == 4 else mask), float("-inf"))  # 4-D: + group axis
    att = att.softmax(dim=-1)
    att = F.dropout(att, p=dropout, training=dropout > 0)
    return (att.view(B, n_kv, group * T, S) @ v).view(B, nh, T, hs)


def causal_mask(T: int, S: int, device: torch.device) -> Tensor:
    """(T, S) bool mask where query i (at key position S - T + i) sees keys 0..S - T + i."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.dropout = config.dropout
        self.scale = config.attn_scale
        self.impl = "sdpa"  # or "math"; see GPT.set_attention
        q_width, kv_width = config.n_head * config.head_dim, config.kv_heads * config.head_dim
        self.c_attn = Linear(config.n_embd, q_width + 2 * kv_width, bias=config.qkv_bias)
        self.c_proj = Linear(q_width, config.n_embd, bias=config.bias)
        self.resid_drop = nn.Dropout(config.dropout)
        # QK-norm: RMSNorm of queries and keys before rotation, over each head (shared by all heads) or all heads
        self.qk_norm = config.qk_norm
        if config.qk_norm != "none":
            per_head = config.qk_norm == "head"
            self.q_norm = RMSNorm(config.head_dim if per_head else q_width, config.layer_norm_eps)
            self.k_norm = RMSNorm(config.head_dim if per_head else kv_width, config.layer_norm_eps)

    def forward(
        self, x: Tensor, mask: Tensor | None, rope: tuple[Tensor, Tensor] | None = None,
        kv: tuple[Tensor, Tensor] | None = None, at: CacheWrite | None = None,
    ) -> Tensor:
        """Attention over `x` (B, T, C); with a layer cache `kv` (keys, values buffers), this call's
        keys/values are stored `at` their places and attention reads the cached ones."""
        B, T, _ = x.shape
        q_width, kv_width = self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        q, k, v = self.c_attn(x).split([q_width, kv_width, kv_width], dim=2)
        if self.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv, T, hs)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if kv is not None and at is not None:
            k, v = at.store(kv[0], k), at.store(kv[1], v)  # (B, n_kv, S, hs)
        dropout = self.dropout if self.training else 0.0
        y = attend(q, k, v, mask, dropout, self.impl, grouped=self.n_kv_head != self.n_head, scale=self.scale)
        y = y.transpose(1, 2).contiguous().view(B, T, q_width)
        return self.resid_drop(self.c_proj(y))


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": functools.partial(F.gelu, approximate="tanh"),  # GPT-2's tanh approximation
    "gelu_exact": F.gelu,  # GPT-NeoX
    "swiglu": F.silu,  # Llama: silu(gate) * up
    "geglu": functools.partial(F.gelu, approximate="tanh"),  # Gemma: gelu(gate) * up
}
GATED = ("swiglu", "geglu")


class MLP(nn.Module):
    """GPT-2's GELU MLP, or a gated one (Llama's SwiGLU, Gemma's GeGLU): `c_fc` then holds the gate and
    up projections, stacked."""

    def __init__(self, config: GPTConfig, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or config.hidden_size
        self.gated = config.mlp in GATED
        self.act = ACTIVATIONS[config.mlp]
        self.c_fc = Linear(config.n_embd, hidden * (2 if self.gated else 1), bias=config.bias)
        self.c_proj = Linear(hidden, config.n_embd, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.gated:
            gate, up = self.c_fc(x).chunk(2, dim=-1)
            return self.drop(self.c_proj(self.act(gate) * up))
        return self.drop(self.c_proj(self.act(self.c_fc(x))))


class MixtureOfExperts(nn.Module):
    """Top-k routing over expert MLPs (Qwen3-MoE): each token goes through the `active` experts its router
    scores highest, their outputs weighted by the router's softmax over all experts."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        assert config.experts is not None
        self.active, self.normalize = config.experts.active, config.experts.normalize
        self.router = Linear(config.n_embd, config.experts.count, bias=False)
        self.experts = nn.ModuleList(MLP(config, config.experts.hidden) for _ in range(config.experts.count))

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        tokens = x.reshape(B * T, C)
        weights = self.router(tokens).float().softmax(dim=-1)  # (N, experts)
        top, chosen = weights.topk(self.active, dim=-1)  # (N, active)
        if self.normalize:
            top = top / top.sum(dim=-1, keepdim=True)
        top = top.to(x.dtype)
        out = torch.zeros_like(tokens)
        for e, expert in enumerate(self.experts):
            rows, rank = (chosen == e).nonzero(as_tuple=True)  # the tokens routed to expert e
            if rows.numel():
                out.index_add_(0, rows, expert(tokens[rows]) * top[rows, rank, None])
        return out.view(B, T, C)


class Block(nn.Module):
    """A transformer block: attention then MLP, each a residual branch with norms where the config puts
    them ("pre": x + f(norm(x)), GPT-2 and Llama; "post": x + norm(f(x)), OLMo 2; "both": x +
    norm(f(norm(x))), Gemma 3), or both branches from the same x (parallel residual, GPT-NeoX)."""

    def __init__(self, config: GPTConfig, layer: int = 0) -> None:
        super().__init__()
        pre, post = config.norm_position in ("pre", "both"), config.norm_position in ("post", "both")
        self.ln_1 = make_norm(config) if pre else None
        self.attn = CausalSelfAttention(config)
        self.attn_out_norm = make_norm(config) if post else None
        self.ln_2 = make_norm(config) if pre else None
        self.mlp = MixtureOfExperts(config) if config.experts is not None else MLP(config)
        self.mlp_out_norm = make_norm(config) if post else None
        self.parallel = config.parallel_residual
        self.windowed = config.windowed(layer)  # attends over a sliding window: GPT._blocks gives it that mask

    def forward(
        self, x: Tensor, mask: Tensor | None, rope: tuple[Tensor, Tensor] | None = None,
        kv: tuple[Tensor, Tensor] | None = None, at: CacheWrite | None = None,
    ) -> Tensor:
        attn = self.attn(_normed(self.ln_1, x), mask, rope, kv, at)
        attn = _normed(self.attn_out_norm, attn)
        if self.parallel:
            return x + attn + self.mlp(_normed(self.ln_2, x))
        x = x + attn
        return x + _normed(self.mlp_out_norm, self.mlp(_normed(self.ln_2, x)))


def _normed(norm: nn.Module | None, x: Tensor) -> Tensor:
    return x if norm is None else norm(x)


class Embedding(nn.Embedding):
    """`nn.Embedding` that leaves a weight on the meta device (a model a file fills) uninitialised: there
    the init only costs time, as torch's meta kernel for `normal_` imports torch._dynamo (2-4 s here)."""

    def reset_parameters(self) -> None:
        if self.weight.device.type != "meta":
            super().reset_parameters()


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, generator: torch.Generator | None = None) -> None:
        """GPT-2's initialisation drawn from `generator` (None: torch's global RNG), on the default device;
        under `torch.device("meta")` a skeleton that a file fills."""
        super().__init__()
        self.config = config
        device = torch.get_default_device()
        with torch.device("meta"):  # the layers' own initialisations would draw from the global RNG
            self.wte = Embedding(config.vocab_size, config.n_embd)
            self.wpe = Embedding(config.context_length, config.n_embd) if config.positions == "learned" else None
            self.drop = nn.Dropout(config.dropout)
            self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
            self.ln_f = make_norm(config)
            if config.num_classes is None:
                self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
            else:  # "swap the head": a classifier reads the same hidden states
                self.lm_head = Linear(config.n_embd, config.num_classes)
        self.compiled_step: Callable[..., Tensor] | None = None  # see compile_decode_step
        # rotary frequencies, computed once (not a buffer: no file holds them): the blocks', then the windowed ones'
        self.rope_frequencies = tuple(inverse_frequencies(config.rotary_dims, theta, scaling) for theta, scaling in (
            (config.rope_theta, config.rope_scaling), (config.local_rope_theta, None))
            if theta is not None and config.positions == "rope")
        if device.type != "meta":
            self.to_empty(device=device)
            self.reset_parameters(generator)
            self.use_fast_weight_layout()
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the LM head with the token embedding (again after loading with assign=True)."""
        if self.config.head_is_tied:
            self.lm_head.weight = self.wte.weight

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer)."""
        self.tie_weights()
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02, generator=generator)
            if isinstance(module, (nn.Linear, LayerNorm)) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, (LayerNorm, RMSNorm)):
                nn.init.ones_(module.weight)
        proj_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, param in self.h.named_parameters():
            if name.endswith("c_proj.weight"):  # what each branch adds to the residual stream (experts' too)
                nn.init.normal_(param, 0.0, proj_std, generator=generator)

    def use_fast_weight_layout(self) -> None:
        """Lay each projection weight out in memory as its dtype's few-row product reads it fastest.

        The weight stays (out, in) to autograd. float32: (in, out) in memory, which MKL reads
        1.2-1.5x faster (and GPT-2 files store, so imports need no copy); bfloat16 and float16:
        (out, in), which their kernels read up to 2x faster (BENCHMARKS.md, "Kernels"). Call it
        again after changing the dtype.
        """
        for name, param in self.named_parameters():
            if not name.endswith(FAST_LAYOUT_WEIGHTS):
                continue
            input_major = param.dtype == torch.float32
            if input_major and param.is_contiguous():
                param.data = param.data.t().contiguous().t()
            elif not input_major and not param.is_contiguous():
                param.data = param.data.contiguous()

    def set_attention(self, impl: str) -> None:
        """Choose the attention implementation: "sdpa" (fused) or "math" (explicit softmax)."""
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {impl!r}")
        for module in self.modules():
            if isinstance(module, CausalSelfAttention):
                module.impl = impl

    def set_dropout(self, p: float) -> None:
        """Change the dropout of a built model (e.g. to fine-tune a model pretrained without it)."""
        self.config = dataclasses.replace(self.config, dropout=p)  # validates p
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
            elif isinstance(module, CausalSelfAttention):
                module.dropout = p

    def hidden(self, idx: Tensor) -> Tensor:
        """Final-norm hidden states (B, T, C) for token ids `idx` (B, T), each row from position 0."""
        T = idx.shape[1]
        if T > self.config.context_length:
            raise ValueError(f"sequence of {T} tokens exceeds the context length ({self.config.context_length})")
        return self._blocks(idx, torch.arange(T, device=idx.device)[None], None)

    def prefill(self, idx: Tensor, cache: KVCache, slots: Sequence[int], start: int = 0) -> Tensor:
        """Hidden states (n, T, C) of `idx` (n, T), row i continuing cache row `slots[i]` at position
        `start` (0: new prompts), its keys/values stored there.

        Prompts of different lengths go in right-padded: a row's padding writes keys past its end,
        which no step reads before overwriting them, so each row's hidden states up to its length
        are what it would get alone.
        """
        T = idx.shape[1]
        if start + T > cache.max_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds the cache's length ({cache.max_len})")
        pos = torch.arange(start, start + T, device=idx.device)[None]  # (1, T)
        mask = causal_mask(T, start + T, idx.device) if start else None
        rows = torch.tensor(list(slots), dtype=torch.long, device=idx.device)
        return self._blocks(idx, pos, mask, cache, SlotSpan(rows, start))

    def decode_step(self, tokens: Tensor, positions: Tensor, cache: KVCache, span: int) -> Tensor:
        """Next-token logits (R, V), float32, for one token per row: row b's token `tokens[b]` at
        position `positions[b]` of cache row b, attending over its first `span` places.

        Shapes depend only on R and `span`, and nothing here reads a value back to the host, so
        this one-token step is what `torch.compile` compiles (gpt-fast's split; `compile_decode_step`).
        """
        step = self.compiled_step or self._decode_step
        return step(tokens, positions, cache, span)

    def compile_decode_step(self, enabled: bool = True) -> None:
        """Run `decode_step` through `torch.compile` (compiling lazily, at its first call), or eagerly
        again. Only the one-token step: prefill's shapes change with every prompt. Compiled for
        symbolic shapes, so a new number of rows or cache length does not compile again."""
        self.compiled_step = torch.compile(self._decode_step, dynamic=True) if enabled else None

    def _decode_step(self, tokens: Tensor, positions: Tensor, cache: KVCache, span: int) -> Tensor:
        R = tokens.shape[0]
        places = torch.arange(span, device=tokens.device)  # (span,)
        mask = (places[None] <= positions[:, None])[:, None, None]  # (R, 1, 1, span)
        h = self._blocks(tokens[:, None], positions[:, None], mask, cache, RowPositions(positions, span))
        return self.lm_head(h.view(R, -1)).float()

    def _blocks(self, idx: Tensor, pos: Tensor, mask: Tensor | None, cache: KVCache | None = None,
                at: CacheWrite | None = None) -> Tensor:
        """Embed `idx` (B, T) at positions `pos` (B or 1, T), run every block, apply the final norm.

        `mask` is the causal one (None: the T queries are the last T of the keys); a windowed block
        gets the sliding-window mask instead, and its own rotary base where the config gives one.
        """
        config = self.config
        x = self.wte(idx)  # (B, T, C)
        if config.embedding_scale != 1.0:
            x = x * torch.tensor(config.embedding_scale, dtype=x.dtype)  # rounded to the dtype, as Gemma does
        rope = local_rope = None
        if self.wpe is not None:
            x = x + self.wpe(pos)
        else:
            rope = rotary(pos, self.rope_frequencies[0], x.dtype)
            if len(self.rope_frequencies) > 1:
                local_rope = rotary(pos, self.rope_frequencies[1], x.dtype)
        window_mask = None
        if config.sliding_window is not None:
            span = at.span if isinstance(at, RowPositions) else int(pos.shape[-1]) + (at.start if at else 0)
            window_mask = sliding_window_mask(pos.expand(x.shape[0], -1), span, config.sliding_window)
        x = self.drop(x)
        for i, block in enumerate(self.h):
            kv = (cache.keys[i], cache.values[i]) if cache is not None else None
            if block.windowed:
                x = block(x, window_mask, local_rope or rope, kv, at)
            else:
                x = block(x, mask, rope, kv, at)
        return self.ln_f(x)

    def forward(self, idx: Tensor, lengths: Tensor | None = None, logits_at: Tensor | None = None) -> Tensor:
        """Next-token logits (B, T, vocab_size) for every position of `idx` (B, T); for a
        classifier (`num_classes` set), class logits (B, num_classes) via `classify(idx, lengths)`.

        With `logits_at` (B, T) bool, logits (N, vocab_size) for only its N True places: training
        that takes no loss on prompts and padding then skips most of the costly LM head.
        """
        if self.config.num_classes is not None:
            if lengths is None:
                raise ValueError("a classifier needs the real length of each right-padded row")
            return self.classify(idx, lengths)
        h = self.hidden(idx)  # (B, T, C)
        return self.lm_head(h if logits_at is None else h[logits_at])

    def classify(self, idx: Tensor, lengths: Tensor) -> Tensor:
        """Class logits (B, num_classes) from the hidden state of each row's last real token.

        `idx` (B, T) is right-padded and `lengths` (B,) counts real tokens: reading position
        T - 1 would read padding for every row shorter than the longest.
        """
        h = self.hidden(idx)  # (B, T, C)
        last = h[torch.arange(idx.shape[0], device=idx.device), lengths - 1]  # (B, C)
        return self.lm_head(last)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Unique parameter count (tied weights once); optionally without the embeddings."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.wte.weight.numel() + (self.wpe.weight.numel() if self.wpe is not None else 0)
        return total

    def flops_per_token(self, seq_len: int | None = None, training: bool = False) -> int:
        """Estimated FLOPs per token: 2 per matmul weight plus attention over the keys each block sees
        (Kaplan et al. 2020; a windowed block sees at most its window).

        Training is three forward passes' worth (forward + backward).
        """
        seq_len = seq_len or self.config.context_length
        matmul_params = self.num_parameters() - (self.wpe.weight.numel() if self.wpe is not None else 0)
        if not self.config.head_is_tied:
            matmul_params -= self.wte.weight.numel()  # an untied embedding is a lookup
        if self.config.experts is not None:  # a token goes through `active` of each block's experts, not all
            idle = self.config.experts.count - self.config.experts.active
            mixtures = [module for module in self.modules() if isinstance(module, MixtureOfExperts)]
            matmul_params -= sum(idle * sum(p.numel() for p in mixture.experts[0].parameters()) for mixture in mixtures)
        config = self.config
        keys = [min(seq_len, config.sliding_window or seq_len) if config.windowed(i) else seq_len
                for i in range(config.n_layer)]
        forward = 2 * matmul_params + 2 * sum(keys) * config.n_head * config.head_dim  # scores and weighted sum
        return 3 * forward if training else forward
