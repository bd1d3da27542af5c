"""Training throughput: gptlab vs Hugging Face `transformers`, same model, same run.

    .venv/bin/python benchmarks/train.py            # gpt2 124M, batch 4 x 256, fp32, AdamW
    .venv/bin/python benchmarks/train.py --steps 3 --preset gpt-small   # quick look
    .venv/bin/python benchmarks/train.py --task sft  # instruction batches, prompt masked (-100)
    .venv/bin/python benchmarks/train.py --compare-precision   # gptlab fp32 vs bf16-mixed (autocast)

Each library trains in its own fresh subprocess (so peak RSS is its own), on identical batches:
random tokens (`--task lm`) or the book's instruction records collated with their prompts and
padding masked to -100 (`--task sft`; each library computes the loss the way its users would).
Prints tokens/s over the timed steps after warm-up, the ratio, and the fraction of the machine's
matmul bound (6·N FLOP per token, N = parameters doing matmuls, FLOP/s measured here with a large
fp32 matmul in the same run).
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


def build(library: str, preset: str, dropout: float, task: str):
    """The model to train and an optimizer for it, as a user of that library would write it."""
    import torch

    from gptlab.models import preset_config

    config = preset_config(preset, dropout=dropout)
    torch.manual_seed(0)
    if library == "gptlab":
        from gptlab.model import GPT
        from gptlab.training.losses import lm_loss, lm_loss_on_targets
        from gptlab.training.optim import build_optimizer

        model = GPT(config).train()
        optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.1)
        if task == "sft":  # logits only where a target counts, as `gptlab finetune instruct` does
            return model, optimizer, lambda x, y: lm_loss_on_targets(model, x, y)
        return model, optimizer, lambda x, y: lm_loss(model(x), y)
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_config = GPT2Config(n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
                           n_positions=config.context_length, vocab_size=config.vocab_size,
                           resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    model = GPT2LMHeadModel(hf_config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)  # the usual loop
    return model, optimizer, lambda x, y: model(input_ids=x, labels=_hf_labels(x, y)).loss


def _hf_labels(inputs, targets):
    """transformers shifts `labels` itself: label t is the target of position t - 1."""
    import torch

    return torch.cat([torch.full_like(targets[:, :1], -100), targets[:, :-1]], dim=1)


def batches(task: str, count: int, batch_size: int, seq_len: int):
    """(inputs, targets) pairs: random tokens, or collated instruction records (seeded order)."""
    import torch

    if task == "lm":
        data = torch.randint(0, 50257, (count, batch_size, seq_len + 1), generator=torch.Generator().manual_seed(1))
        return [(d[:, :-1], d[:, 1:]) for d in data]
    from gptlab.data.instruction import PROMPT_STYLES, collate, encode_record, load_records
    from gptlab.data.order import EpochOrder
    from gptlab.tokenizer import GPT2Tokenizer

    tokenizer = GPT2Tokenizer()
    items = [encode_record(r, tokenizer, PROMPT_STYLES["alpaca"]) for r in load_records("instruction-data")]
    order = EpochOrder(len(items), seed=1)
    return [collate([items[i] for i in order.positions(step, batch_size)], tokenizer.eos_id, True, seq_len)
            for step in range(count)]


def worker(args: argparse.Namespace) -> None:
    """Train one library for warm-up + timed steps; print one JSON line of results."""
    import torch

    if args.worker == "gptlab" or args.tuned_malloc:
        from gptlab.runtime import keep_large_allocations_on_heap

        keep_large_allocations_on_heap()  # what `gptlab pretrain`/`finetune` do on CPU
    model, optimizer, loss_fn = build(args.worker, args.preset, args.dropout, args.task)
    data = batches(args.task, args.warmup + args.steps, args.batch_size, args.seq_len)
    times = []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")
    for x, y in data:
        started = time.perf_counter()
        with autocast:
            loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    timed = times[args.warmup:]
    tokens = sum(x.numel() for x, _ in data[args.warmup:])
    print(json.dumps({
        "tokens_per_second": tokens / sum(timed),
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
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per row (sft: the most; rows are padded "
                                                                  "to the longest record of their batch)")
    parser.add_argument("--task", choices=["lm", "sft"], default="lm",
                        help="lm: random tokens, loss everywhere; sft: instruction records, prompt masked")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument("--tuned-malloc", action="store_true",
                        help="give transformers gptlab's glibc malloc tuning too (to isolate its effect)")
    parser.add_argument("--precision", choices=["32", "bf16-mixed"], default="32",
                        help="both libraries: fp32, or bf16 autocast around the forward and loss (default 32)")
    parser.add_argument("--compare-precision", action="store_true",
                        help="instead of transformers, run gptlab twice: 32 and bf16-mixed (the same batches)")
    parser.add_argument("--worker", choices=["gptlab", "hf"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import torch
    import transformers

    skip = ("worker", "tuned_malloc", "compare_precision", "precision")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in skip]
    flags += ["--tuned-malloc"] if args.tuned_malloc else []
    runs = {"gptlab": ("gptlab", args.precision), "hf": ("hf", args.precision)}
    if args.compare_precision:
        runs = {"gptlab": ("gptlab", "32"), "hf": ("gptlab", "bf16-mixed")}
    results = {}
    for key, (library, precision) in runs.items():
        out = subprocess.run([sys.executable, __file__, *flags, "--precision", precision, "--worker", library],
                             capture_output=True, text=True, check=True)
        results[key] = json.loads(out.stdout.strip().splitlines()[-1])
    from gptlab.model import GPT
    from gptlab.models import preset_config

    flops = matmul_flops()
    with torch.device("meta"):
        shape = GPT(preset_config(args.preset))
    n = shape.num_parameters() - shape.wpe.weight.numel()  # parameters that do matmuls (head tied)
    bound = flops / (6 * n)
    print(f"machine: {_cpu_name()}, {torch.get_num_threads()} threads; torch {torch.__version__}, "
          f"transformers {transformers.__version__}; {date.today()}")
    print(f"config: {args.task}, {args.preset}, batch {args.batch_size} x {'up to ' if args.task == 'sft' else ''}"
          f"{args.seq_len}, {'32 vs bf16-mixed' if args.compare_precision else args.precision}, "
          f"dropout {args.dropout}, "
          f"AdamW, {args.warmup} warm-up + {args.steps} timed steps; glibc malloc tuned for "
          f"{'both' if args.tuned_malloc else 'gptlab only (as its training loop does)'}")
    print(f"matmul: {flops / 1e9:.1f} GFLOP/s fp32 -> bound {bound:.0f} tokens/s at 6N = {6 * n / 1e9:.2f} GFLOP/token")
    print(f"{'library':<14}{'tokens/s':>10}{'s/step':>9}{'of bound':>10}{'peak RSS MB':>13}")
    names = ("gptlab 32", "gptlab bf16-mixed") if args.compare_precision else ("gptlab", "transformers")
    for library, name in zip(("gptlab", "hf"), names):
        r = results[library]
        print(f"{name:<14}{r['tokens_per_second']:>10.1f}{r['step_seconds']:>9.2f}"
              f"{r['tokens_per_second'] / bound:>10.0%}{r['peak_rss_mb']:>13.0f}")
    ratio = results["gptlab"]["tokens_per_second"] / results["hf"]["tokens_per_second"]
    mem = results["gptlab"]["peak_rss_mb"] / results["hf"]["peak_rss_mb"]
    print(f"{names[0]} / {names[1]}: {ratio:.2f}x training tokens/s, {mem:.2f}x peak memory; final loss "
          f"{results['gptlab']['final_loss']:.4f} vs {results['hf']['final_loss']:.4f}")


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
