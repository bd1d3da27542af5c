"""Training throughput: gptlab vs Hugging Face `transformers`, same model, same run.

    .venv/bin/python benchmarks/train.py            # gpt2 124M, batch 4 x 256, fp32, AdamW
    .venv/bin/python benchmarks/train.py --steps 3 --preset gpt-small   # quick look

Each library trains in its own fresh subprocess (so peak RSS is its own), on identical random
token batches: tokens/s over the timed steps after warm-up, the ratio, and the fraction of the
machine's matmul bound (6·N FLOP per token, N = parameters doing matmuls, FLOP/s measured here
with a large fp32 matmul in the same run).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import date


def build(library: str, preset: str, dropout: float):
    """The model to train and an optimizer for it, as a user of that library would write it."""
    import torch

    from gptlab.config import GPTConfig

    config = GPTConfig.from_name(preset, dropout=dropout)
    torch.manual_seed(0)
    if library == "gptlab":
        from gptlab.model import GPT
        from gptlab.training.losses import lm_loss
        from gptlab.training.optim import build_optimizer

        model = GPT(config).train()
        optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.1)
        return model, optimizer, lambda x, y: lm_loss(model(x), y)
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_config = GPT2Config(n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
                           n_positions=config.context_length, vocab_size=config.vocab_size,
                           resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    model = GPT2LMHeadModel(hf_config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)  # the usual loop
    return model, optimizer, lambda x, y: model(input_ids=x, labels=x).loss


def worker(args: argparse.Namespace) -> None:
    """Train one library for warm-up + timed steps; print one JSON line of results."""
    import torch

    if args.worker == "gptlab" or args.tuned_malloc:
        from gptlab.runtime import keep_large_allocations_on_heap

        keep_large_allocations_on_heap()  # what gptlab's training loop does on CPU
    model, optimizer, loss_fn = build(args.worker, args.preset, args.dropout)
    gen = torch.Generator().manual_seed(1)
    data = torch.randint(0, 50257, (args.warmup + args.steps, args.batch_size, args.seq_len + 1), generator=gen)
    times = []
    for step in range(args.warmup + args.steps):
        x = data[step, :, :-1]
        y = data[step, :, 1:]
        started = time.perf_counter()
        loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    timed = times[args.warmup:]
    tokens = args.batch_size * args.seq_len
    print(json.dumps({
        "tokens_per_second": tokens * len(timed) / sum(timed),
        "step_seconds": sum(timed) / len(timed),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "final_loss": float(loss),
    }))


def matmul_flops(size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 matmul FLOP/s of this machine (all threads torch uses)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="gpt2", help="model shape (default gpt2, 124M)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument("--tuned-malloc", action="store_true",
                        help="give transformers gptlab's glibc malloc tuning too (to isolate its effect)")
    parser.add_argument("--worker", choices=["gptlab", "hf"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import torch
    import transformers

    flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("worker", "tuned_malloc")]
    flags += ["--tuned-malloc"] if args.tuned_malloc else []
    results = {}
    for library in ("gptlab", "hf"):
        out = subprocess.run([sys.executable, __file__, *flags, "--worker", library],
                             capture_output=True, text=True, check=True)
        results[library] = json.loads(out.stdout.strip().splitlines()[-1])
    from gptlab.config import GPTConfig
    from gptlab.model import GPT

    flops = matmul_flops()
    with torch.device("meta"):
        shape = GPT(GPTConfig.from_name(args.preset))
    n = shape.num_parameters() - shape.wpe.weight.numel()  # parameters that do matmuls (head tied)
    bound = flops / (6 * n)
    print(f"machine: {_cpu_name()}, {torch.get_num_threads()} threads; torch {torch.__version__}, "
          f"transformers {transformers.__version__}; {date.today()}")
    print(f"config: {args.preset}, batch {args.batch_size} x {args.seq_len}, fp32, dropout {args.dropout}, "
          f"AdamW, {args.warmup} warm-up + {args.steps} timed steps; glibc malloc tuned for "
          f"{'both' if args.tuned_malloc else 'gptlab only (as its training loop does)'}")
    print(f"matmul: {flops / 1e9:.1f} GFLOP/s fp32 -> bound {bound:.0f} tokens/s at 6N = {6 * n / 1e9:.2f} GFLOP/token")
    print(f"{'library':<14}{'tokens/s':>10}{'s/step':>9}{'of bound':>10}{'peak RSS MB':>13}")
    for library, name in (("gptlab", "gptlab"), ("hf", "transformers")):
        r = results[library]
        print(f"{name:<14}{r['tokens_per_second']:>10.1f}{r['step_seconds']:>9.2f}"
              f"{r['tokens_per_second'] / bound:>10.0%}{r['peak_rss_mb']:>13.0f}")
    ratio = results["gptlab"]["tokens_per_second"] / results["hf"]["tokens_per_second"]
    mem = results["gptlab"]["peak_rss_mb"] / results["hf"]["peak_rss_mb"]
    print(f"gptlab / transformers: {ratio:.2f}x training tokens/s, {mem:.2f}x peak memory")


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
