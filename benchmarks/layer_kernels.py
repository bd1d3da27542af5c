"""One projection at a time: float32, bfloat16, int8 and int4 weights, 1 to 512 input rows.

    .venv/bin/python benchmarks/layer_kernels.py             # ~2 min; --threads (default: torch's), --repeats

Why `gptlab.linear` and `gptlab.quantize` compute as they do: prints microseconds per weight
(best of --repeats) for a GPT-2 projection and SmolLM2's LM head, in both memory layouts (float
weights), through gptlab's `Linear` (float32: one block of output columns per thread, as one
batched product) and its quantized layers (int8: the row-by-row kernel up to 16 rows, a
dequantizing bfloat16 matmul above; both int8 paths also forced). Each call cycles through enough
copies of the weight to exceed the CPU's caches, as decoding a whole model does.
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

from gptlab.linear import Linear  # noqa: E402
from gptlab.quantize import Quantization, quantized_layer  # noqa: E402

SHAPES = {"GPT-2 c_attn 2304 x 768": (2304, 768), "SmolLM2 LM head 49152 x 576": (49152, 576)}
CACHE_BYTES = 256 * 2**20  # float32 copies of a weight per call: at least this many bytes (beyond any cache)


def best_us(call: Callable[[], object], repeats: int) -> float:
    call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best * 1e6


def input_major(weight: torch.Tensor) -> torch.Tensor:
    """The same (out, in) weight stored (in, out) in memory."""
    return weight.t().contiguous().t()


@torch.no_grad()
def row(linears: list[Linear], rows: int, repeats: int) -> dict[str, float]:
    """Microseconds per weight of each way of computing the layers `linears` (copies of one) on `rows` rows."""
    int8s, int4s = ([quantized_layer(linear, Quantization(s)) for linear in linears] for s in ("int8", "int4"))
    x = torch.randn(rows, linears[0].in_features)
    xb = x.bfloat16()
    fp32_out, bf16_out = [m.weight for m in linears], [m.weight.bfloat16() for m in linears]
    fp32_in, bf16_in = [input_major(w) for w in fp32_out], [input_major(w) for w in bf16_out]
    calls = {
        "fp32, MKL (out, in)": lambda: [F.linear(x, w) for w in fp32_out],
        "fp32, MKL (in, out)": lambda: [F.linear(x, w) for w in fp32_in],
        "fp32, gptlab Linear (in, out)": lambda: [m(x) for m in linears],
        "bf16 (out, in)": lambda: [F.linear(xb, w) for w in bf16_out],
        "bf16 (in, out)": lambda: [F.linear(xb, w) for w in bf16_in],
        "int8 kernel": lambda: [torch.ops.aten._weight_int8pack_mm(xb, m.weight_int8, m.scales) for m in int8s],
        "int8 dequant + bf16 matmul": lambda: [F.linear(xb, m.weight_int8.to(torch.bfloat16)) * m.scales
                                               for m in int8s],
        "int8 layer": lambda: [m(xb) for m in int8s],
        "int4 layer": lambda: [m(xb) for m in int4s],
    }
    return {name: best_us(call, repeats) / len(linears) for name, call in calls.items()}


def copies(out_features: int, in_features: int) -> list[Linear]:
    """Enough float32 copies of one random layer (input-major, as gptlab stores float32) to exceed the caches."""
    n = max(2, -(-CACHE_BYTES // (out_features * in_features * 4)))
    layer = Linear(in_features, out_features, bias=False)
    layer.weight.data = input_major(layer.weight.data)
    made = []
    for _ in range(n):
        twin = Linear(in_features, out_features, bias=False, device="meta")
        twin.weight = nn.Parameter(layer.weight.detach().clone(memory_format=torch.preserve_format))
        made.append(twin)
    return made


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per cell (best is kept)")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 8, 32, 512], help="input rows per call")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), best of {args.repeats}; microseconds per weight\n")
    for name, (out_features, in_features) in SHAPES.items():
        layers = copies(out_features, in_features)
        results = {rows: row(layers, rows, args.repeats) for rows in args.rows}
        columns = list(next(iter(results.values())))
        print(f"| {name}, rows | " + " | ".join(columns) + " |\n|---:|" + "---:|" * len(columns))
        for rows, times in results.items():
            print(f"| {rows} | " + " | ".join(f"{t:.0f}" for t in times.values()) + " |")
        print()


if __name__ == "__main__":
    main()
