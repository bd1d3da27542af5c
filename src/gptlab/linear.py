"""A linear layer whose few-row float32 products use every core.

MKL multiplies one float32 row (or a few) by a weight matrix on a single core, whatever the thread
count, but spreads a batch of matrix products over all of them. Batch-1 decoding is exactly that
product, once per weight per token. Splitting the weight's output columns into one chunk per thread
and multiplying the chunks as a batch reads the weight about 2x faster on this 2-core machine, and
still 1.2x faster at 128 rows (BENCHMARKS.md, "Kernels"). The chunks are views: no copy, any layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SPLIT_MAX_ROWS = 128  # above this many rows MKL's own float32 matrix product threads well


@torch.compiler.assume_constant_result  # torch.compile would otherwise break its graph here, at every layer
def cpu_threads() -> int:
    return torch.get_num_threads()


class Linear(nn.Linear):
    """`nn.Linear`, with the same parameters and results, that multiplies few float32 rows on all
    CPU threads (`split_linear`)."""

    def forward(self, x: Tensor) -> Tensor:
        chunks = min(cpu_threads(), self.out_features)
        few_rows = x.numel() <= SPLIT_MAX_ROWS * x.shape[-1]
        if chunks == 1 or not few_rows or x.dtype != torch.float32 or x.device.type != "cpu":
            return F.linear(x, self.weight, self.bias)
        return split_linear(x, self.weight, self.bias, chunks)


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
