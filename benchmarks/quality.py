"""Quality cost of each dtype and quantization: SmolLM2's perplexity and greedy text against float32.

One command, CPU, no network (the built-in SmolLM2-135M-Instruct and the offline data mirror):

    .venv/bin/python benchmarks/quality.py            # ~15 min on 2 cores; --help for sizes and modes

For each mode (float32, bfloat16, int8, int4, and each with the other choice for the LM head):
- perplexity on The Verdict and on Tiny Shakespeare (the first --max-tokens tokens of each),
  non-overlapping windows of --context tokens, and its relative change from float32;
- greedy agreement: 8 prompts, 128 new tokens each; how many tokens match float32's before the
  first difference (summed over prompts) and how many prompts match in full.
Targets (issue #15): bfloat16 within 0.5% of float32's perplexity, int8 within 1.5%, int4 within 5%.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing
os.environ.setdefault("GPTLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gptlab.data.text import token_stream  # noqa: E402
from gptlab.evaluation.perplexity import perplexity  # noqa: E402
from gptlab.generation import GenerationSettings, generate_batch  # noqa: E402
from gptlab.loading import LoadedModel, load_model  # noqa: E402
from gptlab.quantize import Quantization  # noqa: E402

MODES = {  # name -> (dtype, quantization)
    "float32": (torch.float32, None),
    "bfloat16": (torch.bfloat16, None),
    "int8": (None, Quantization("int8")),  # the LM head int8 too (the default)
    "int4": (None, Quantization("int4")),  # the LM head stays bfloat16 (the default)
    "int8, head bf16": (None, Quantization("int8", head=False)),
    "int4, head int4": (None, Quantization("int4", head=True)),
}
TARGETS = {"bfloat16": 0.005, "int8": 0.015, "int4": 0.05}
DATA = ("the-verdict", "tinyshakespeare")
PROMPTS = (
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colors are",
    "Water boils at a temperature of",
    "In 1492, Christopher Columbus",
    "The best way to learn a new language is",
    "Photosynthesis is the process by which",
)


@dataclass
class ModeResult:
    perplexity: dict[str, float]  # data set -> perplexity
    greedy: list[list[int]]  # per prompt, the new token ids
    seconds: float


def measure(loaded: LoadedModel, tokens: dict[str, list[int]], context: int, new_tokens: int) -> ModeResult:
    start = time.perf_counter()
    ppl = {name: perplexity(loaded.model, ids, context, 4, context).perplexity for name, ids in tokens.items()}
    prompts = [loaded.tokenizer.encode(p) for p in PROMPTS]
    settings = GenerationSettings(max_new_tokens=new_tokens, temperature=0, end_of_text=False)
    greedy = [generate_batch(loaded.model, [p], settings)[0] for p in prompts]
    return ModeResult(ppl, greedy, time.perf_counter() - start)


def leading_match(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def report(results: dict[str, ModeResult], new_tokens: int) -> list[str]:
    ref = results["float32"]
    lines = ["| mode | " + " | ".join(f"{d} ppl (vs fp32)" for d in DATA) + " | greedy tokens = fp32 | prompts = fp32 "
             "| target | s |", "|---|" + "---:|" * (len(DATA) + 4)]
    for mode, res in results.items():
        cells = [f"{res.perplexity[d]:.3f} ({res.perplexity[d] / ref.perplexity[d] - 1:+.2%})" for d in DATA]
        same = sum(leading_match(a, b) for a, b in zip(res.greedy, ref.greedy))
        whole = sum(a == b for a, b in zip(res.greedy, ref.greedy))
        worst = max(abs(res.perplexity[d] / ref.perplexity[d] - 1) for d in DATA)
        target = TARGETS.get(mode.split(",")[0])
        verdict = "" if target is None else f"{'holds' if worst <= target else 'MISSED'} (within {target:.1%})"
        lines.append(f"| {mode} | {' | '.join(cells)} | {same}/{len(PROMPTS) * new_tokens} | {whole}/{len(PROMPTS)} "
                     f"| {verdict} | {res.seconds:.0f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--max-tokens", type=int, default=65536, help="tokens scored per data set (from the start)")
    p.add_argument("--context", type=int, default=512, help="window length (windows do not overlap)")
    p.add_argument("--new-tokens", type=int, default=128, help="greedy tokens per prompt")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), metavar="MODE",
                   help=f"modes to run (float32 always runs first); choices: {', '.join(MODES)}")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = ["float32", *[m for m in args.modes if m != "float32"]]
    results: dict[str, ModeResult] = {}
    for mode in modes:
        dtype, quantization = MODES[mode]
        loaded = load_model("smollm2", dtype=dtype, quantize=quantization)
        tokens = {name: token_stream([name], loaded.tokenizer)[: args.max_tokens].tolist() for name in DATA}
        results[mode] = measure(loaded, tokens, args.context, args.new_tokens)
        print(f"{mode}: " + ", ".join(f"{d} {v:.3f}" for d, v in results[mode].perplexity.items())
              + f" [{results[mode].seconds:.0f} s]", flush=True)
    counts = ", ".join(f"{d} {min(len(token_stream([d], loaded.tokenizer)), args.max_tokens):,}" for d in DATA)
    print(f"\nSmolLM2-135M-Instruct (built-in GGUF, Q4_1 dequantized = the float32 reference); tokens scored: "
          f"{counts}; "
          f"windows of {args.context}; torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("\n".join(report(results, args.new_tokens)))


if __name__ == "__main__":
    main()
