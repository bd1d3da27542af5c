"""One projection at a time: float32, bfloat16, int8 and int4 weights, 1 to 512 input rows.

    .venv/bin/python benchmarks/kernels.py             # ~1 min; --threads 1 (default), --repeats

Why `gptlab.quantize` computes as it does: prints microseconds per call (best of --repeats) for a
GPT-2 projection and SmolLM2's LM head, through gptlab's own quantized layers (int8: the row-by-row
kernel up to 16 rows, a dequantizing bfloat16 matmul above) and, for int8, both paths forced.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout

from gptlab.quantize import Quantization, quantized_layer  # noqa: E402

SHAPES = {"GPT-2 c_attn 2304 x 768": (2304, 768), "SmolLM2 LM head 49152 x 576": (49152, 576)}


def best_us(call: Callable[[], object], repeats: int) -> float:
    call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best * 1e6


@torch.no_grad()
def row(linear: nn.Linear, rows: int, repeats: int) -> dict[str, float]:
    """Microseconds per call of each way of computing `linear` on `rows` rows."""
    int8, int4 = (quantized_layer(linear, Quantization(s)) for s in ("int8", "int4"))
    x = torch.randn(rows, linear.in_features)
    xb, wb = x.bfloat16(), linear.weight.bfloat16()
    return {
        "fp32": best_us(lambda: linear(x), repeats),
        "bf16": best_us(lambda: F.linear(xb, wb), repeats),
        "int8 kernel": best_us(lambda: torch.ops.aten._weight_int8pack_mm(xb, int8.weight_int8, int8.scales),
                               repeats),
        "int8 dequant + bf16 matmul": best_us(lambda: F.linear(xb, int8.weight_int8.to(torch.bfloat16))
                                              * int8.scales, repeats),
        "int8 layer": best_us(lambda: int8(xb), repeats),
        "int4 layer": best_us(lambda: int4(xb), repeats),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (batch-1 decode used one core here)")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per cell (best is kept)")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 8, 32, 512], help="input rows per call")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), best of {args.repeats}; microseconds per call\n")
    for name, (out_features, in_features) in SHAPES.items():
        linear = nn.Linear(in_features, out_features, bias=False)
        results = {rows: row(linear, rows, args.repeats) for rows in args.rows}
        columns = list(next(iter(results.values())))
        print(f"| {name}, rows | " + " | ".join(columns) + " |\n|---:|" + "---:|" * len(columns))
        for rows, times in results.items():
            print(f"| {rows} | " + " | ".join(f"{t:.0f}" for t in times.values()) + " |")
        print()


if __name__ == "__main__":
    main()
