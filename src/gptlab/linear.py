"""A linear layer that reads its weight as fast as this CPU allows, with `nn.Linear`'s parameters.

- **float32, few rows**: MKL multiplies one float32 row (or a few) by a weight matrix on a single
  core, whatever the thread count, but spreads a batch of matrix products over all of them. Batch-1
  decoding is exactly that product, once per weight per token. Splitting the weight's output columns
  into one chunk per thread and multiplying the chunks as a batch reads the weight about 2x faster
  on this 2-core machine, and still 1.2x faster at 128 rows (BENCHMARKS.md, "Kernels"). The chunks
  are views: no copy, any layout.
- **bfloat16, inference**: oneDNN reads a weight it has reordered into its own blocked layout
  1.3x faster at one row and 1.15x at 32 than the plain one (BENCHMARKS.md). The reordered copy is
  made at the first call without gradients and kept beside the weight (its memory again), and made
  afresh when the weight changes.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.devices import cpu_has_native_bf16

SPLIT_MAX_ROWS = 128  # above this many rows MKL's own float32 matrix product threads well


@functools.cache
def can_reorder_bf16() -> bool:
    """oneDNN is built in and the CPU multiplies bf16 natively (else its reordered path is untested)."""
    return torch.backends.mkldnn.is_available() and cpu_has_native_bf16()


class Linear(nn.Linear):
    """`nn.Linear`, with the same parameters and results, that multiplies few float32 rows on all CPU
    threads (`split_linear`) and bfloat16 inputs, without gradients, with a reordered weight."""

    _reordered: Tensor | None = None  # oneDNN's copy of a bfloat16 weight
    _reordered_from: tuple[int, int | None] | None = None  # (address, version) of the weight it was made from

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or torch.compiler.is_compiling():  # inductor chooses its own kernels
            return F.linear(x, self.weight, self.bias)
        if x.dtype == torch.bfloat16 and self.weight.dtype == torch.bfloat16 and not torch.is_grad_enabled():
            if can_reorder_bf16():
                return self._reordered_linear(x)
        chunks = min(torch.get_num_threads(), self.out_features)
        if chunks > 1 and x.dtype == torch.float32 and x.numel() <= SPLIT_MAX_ROWS * x.shape[-1]:
            return split_linear(x, self.weight, self.bias, chunks)
        return F.linear(x, self.weight, self.bias)

    def _reordered_linear(self, x: Tensor) -> Tensor:
        # a weight made under inference_mode (a CLI command loads there) has no version counter: its
        # address alone keys the copy, as nothing outside inference_mode can write to it
        version = None if self.weight.is_inference() else self.weight._version
        source = (self.weight.data_ptr(), version)
        if self._reordered_from != source:
            self._reordered = torch.ops.mkldnn._reorder_linear_weight(self.weight.contiguous(), 1)
            self._reordered_from = source
        rows = x.reshape(-1, x.shape[-1])
        y = torch.ops.mkldnn._linear_pointwise(rows, self._reordered, self.bias, "none", [], "")
        return y.reshape(*x.shape[:-1], self.out_features)

    def __getstate__(self) -> dict:
        """Copies and pickles leave the reordered weight behind (oneDNN tensors do not copy); it is
        made again at the next call."""
        state = super().__getstate__()
        return {**state, "_reordered": None, "_reordered_from": None}


def split_linear(x: Tensor, weight: Tensor, bias: Tensor | None, chunks: int) -> Tensor:
    """`F.linear(x, weight, bias)` as one batched product of `chunks` equal column blocks of the
    weight, plus an ordinary product for the few outputs left over (GPT-2's 50,257-token head)."""
    rows = x.reshape(-1, x.shape[-1])  # (M, in)
    even = weight.shape[0] - weight.shape[0] % chunks
    blocks = weight[:even].t().unflatten(1, (chunks, -1)).transpose(0, 1)  # (chunks, in, even / chunks), views
    shared = rows.expand(chunks, *rows.shape)  # (chunks, M, in), no copy
    if bias is None:
        y = torch.bmm(shared, blocks)
    else:
        y = torch.baddbmm(bias[:even].view(chunks, 1, -1), shared, blocks)  # (chunks, M, even / chunks)
    y = y.transpose(0, 1).reshape(rows.shape[0], even)
    if even < weight.shape[0]:
        rest = F.linear(rows, weight[even:], None if bias is None else bias[even:])  # (M, out - even)
        y = torch.cat([y, rest], dim=1)
    return y.reshape(*x.shape[:-1], weight.shape[0])
