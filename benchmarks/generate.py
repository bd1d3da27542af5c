"""Generation benchmark: gptlab vs Hugging Face `transformers` on identical GPT-2 weights, same run.

One command, CPU, no network:

    .venv/bin/python benchmarks/generate.py            # defaults: gpt2 124M, 5 repeats
    .venv/bin/python benchmarks/generate.py --help

What is measured (same method for both libraries, runs interleaved gptlab/HF):
- decode tokens/s, batch 1, greedy: each library's own generate loop is timed for N new tokens
  and for 1 new token (prefill + first token) on the same prompt; decode = (N - 1) tokens over
  the difference of the two best-of-repeats times. Generate-loop overheads are included.
- prefill ms: one no-cache forward pass over a long prompt, logits for the last position only
  (what generation needs), best of repeats.
- peak RSS of loading the saved folder, each in a fresh subprocess.
- memory-bandwidth bound for decode: bytes of weights read per token (fp32 parameter bytes)
  against a measured large-array copy bandwidth; each library's fraction of that bound.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing
os.environ.setdefault("GPTLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))  # tokenizer files
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import transformers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from gptlab.checkpoint import load_model  # noqa: E402
from gptlab.generation import GenerationSettings, generate  # noqa: E402

PAD_ID = 50256
GPT2_124M = dict(n_layer=12, n_head=12, n_embd=768)  # (layers, heads, width) of gpt2 124M


@dataclass
class Options:
    """Benchmark sizes and repeats (filled from the command line)."""

    prompt_tokens: int = 32  # decode prompt length
    new_tokens: int = 128  # tokens generated per decode run
    prefill_tokens: int = 512  # prompt length of the prefill benchmark
    repeats: int = 5  # timed repeats per measurement (after one warm-up)
    bandwidth_mb: int = 1024  # size of the tensor copied to measure memory bandwidth
    seed: int = 0  # weights and prompt
    threads: int | None = None  # torch threads for both libraries (default: torch's default)
    skip_rss: bool = False  # skip the two loading subprocesses


def parse_args(argv: list[str] | None = None) -> Options:
    defaults = Options()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prompt-tokens", type=int, default=defaults.prompt_tokens, help="decode prompt length")
    p.add_argument("--new-tokens", type=int, default=defaults.new_tokens, help="new tokens per decode run")
    p.add_argument("--prefill-tokens", type=int, default=defaults.prefill_tokens, help="prefill prompt length")
    p.add_argument("--repeats", type=int, default=defaults.repeats, help="timed repeats (after a warm-up)")
    p.add_argument("--bandwidth-mb", type=int, default=defaults.bandwidth_mb, help="copy size for bandwidth")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed for weights and prompts")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--skip-rss", action="store_true", help="skip the loading-RSS subprocesses")
    args = p.parse_args(argv)
    if args.new_tokens < 2 or args.prompt_tokens < 1 or args.repeats < 1:
        p.error("need --new-tokens >= 2, --prompt-tokens >= 1, --repeats >= 1")
    if args.prompt_tokens + args.new_tokens > 1024 or args.prefill_tokens > 1024:
        p.error("GPT-2's context is 1024 tokens: prompt + new tokens and --prefill-tokens must fit")
    return Options(**{k.replace("-", "_"): v for k, v in vars(args).items()})


# ---------------------------------------------------------------- machine and set-up

def machine_lines() -> list[str]:
    """CPU model, cores, memory, versions and date, for the report header."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_gb = int(f.readline().split()[1]) / 1024**2
    return [
        f"date         {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"cpu          {cpu}, {os.cpu_count()} logical cores, {mem_gb:.0f} GB RAM",
        f"python       {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), transformers {transformers.__version__}",
    ]


def save_hf_folder(folder: Path, seed: int) -> Path:
    """A seeded random `transformers` GPT-2 124M written with `save_pretrained`."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024, **GPT2_124M))
    model.save_pretrained(folder)
    return folder


def load_both(folder: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """gptlab and HF models from the same folder, in eval mode."""
    ours = load_model(str(folder)).model.eval()
    theirs = GPT2LMHeadModel.from_pretrained(folder).eval()  # default attention (sdpa)
    return ours, theirs


# ---------------------------------------------------------------- the two libraries' calls

def gptlab_generate(model, prompt: list[int], n: int) -> list[int]:
    return list(generate(model, prompt, GenerationSettings(max_new_tokens=n, temperature=0)))


@torch.inference_mode()
def hf_generate(model, prompt: list[int], n: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n, min_new_tokens=n,
                         eos_token_id=None, pad_token_id=PAD_ID)
    return out[0, len(prompt):].tolist()


@torch.inference_mode()
def gptlab_prefill(model, ids: torch.Tensor) -> torch.Tensor:
    return model.lm_head(model.hidden(ids)[:, -1])  # (1, V)


@torch.inference_mode()
def hf_prefill(model, ids: torch.Tensor) -> torch.Tensor:
    return model(ids, use_cache=False, logits_to_keep=1).logits[:, -1]  # (1, V)


# ---------------------------------------------------------------- measurements

def best_times(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call for each named call: one warm-up each, then repeats interleaved."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return times


def check_agreement(ours, theirs, prompt: list[int], n: int) -> str:
    """One line saying how many greedy tokens the two libraries agree on."""
    a, b = gptlab_generate(ours, prompt, n), hf_generate(theirs, prompt, n)
    same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    verdict = "identical" if a == b else f"DIFFER from token {same}"
    return f"greedy check: {same}/{n} leading tokens equal, outputs {verdict}; first 8 = {a[:8]}"


def memory_bandwidth(megabytes: int, repeats: int = 5) -> float:
    """Bytes/s of a large tensor copy, counting the read and the write, best of `repeats`."""
    n = megabytes * 2**20 // 4
    src, dst = torch.rand(n), torch.empty(n)
    dst.copy_(src)  # touch the pages
    best = min(_timed(lambda: dst.copy_(src)) for _ in range(repeats))
    return 2 * n * 4 / best


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


RSS_SCRIPT = """
import re, sys
import torch
{imports}
# VmHWM is this process's peak RSS; unlike ru_maxrss it does not inherit the parent's peak
peak = lambda: int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1]) / 1024
before = peak()
model = {load}
print(before, peak())
"""
LOADERS = {
    "gptlab": ("from gptlab.checkpoint import load_model", "load_model(sys.argv[1]).model"),
    "transformers": ("from transformers import GPT2LMHeadModel", "GPT2LMHeadModel.from_pretrained(sys.argv[1])"),
}


def load_rss(folder: Path) -> dict[str, tuple[float, float]]:
    """(peak MB after imports, peak MB after loading) per library, each in a fresh subprocess."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    result = {}
    for name, (imports, load) in LOADERS.items():
        code = RSS_SCRIPT.format(imports=imports, load=load)
        out = subprocess.run([sys.executable, "-c", code, str(folder)], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        result[name] = (float(out[0]), float(out[1]))
    return result


# ---------------------------------------------------------------- report

def row(label: str, ours: float, theirs: float, fmt: str, ratio: bool = True) -> str:
    r = f"{ours / theirs:.2f}x" if ratio and theirs else ""
    return f"| {label} | {ours:{fmt}} | {theirs:{fmt}} | {r} |"


def main(argv: list[str] | None = None) -> None:
    opt = parse_args(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    t0 = time.perf_counter()
    print("\n".join(machine_lines()))
    gen = torch.Generator().manual_seed(opt.seed)
    prompt = torch.randint(0, 50257, (opt.prompt_tokens,), generator=gen).tolist()
    long_ids = torch.randint(0, 50257, (1, opt.prefill_tokens), generator=gen)

    with tempfile.TemporaryDirectory(prefix="gptlab-bench-") as tmp:
        folder = save_hf_folder(Path(tmp) / "gpt2-random", opt.seed)
        weights_mb = (folder / "model.safetensors").stat().st_size / 2**20
        ours, theirs = load_both(folder)
        n_params = ours.num_parameters()
        print(f"model        gpt2 124M shape, seeded random weights ({n_params / 1e6:.1f}M params, "
              f"{weights_mb:.0f} MB safetensors), fp32")
        print(check_agreement(ours, theirs, prompt, opt.new_tokens))
        rss = {} if opt.skip_rss else load_rss(folder)

        n = opt.new_tokens
        dec = best_times({
            "ours_full": lambda: gptlab_generate(ours, prompt, n),
            "theirs_full": lambda: hf_generate(theirs, prompt, n),
            "ours_first": lambda: gptlab_generate(ours, prompt, 1),
            "theirs_first": lambda: hf_generate(theirs, prompt, 1),
        }, opt.repeats)
        pre = best_times({
            "ours": lambda: gptlab_prefill(ours, long_ids),
            "theirs": lambda: hf_prefill(theirs, long_ids),
        }, opt.repeats)
    bandwidth = memory_bandwidth(opt.bandwidth_mb)

    def decode_tps(who: str) -> float:
        return (n - 1) / (min(dec[f"{who}_full"]) - min(dec[f"{who}_first"]))

    ours_tps, theirs_tps = decode_tps("ours"), decode_tps("theirs")
    bytes_per_token = n_params * 4  # every weight is read once per decoded token (fp32)
    bound = bandwidth / bytes_per_token
    print(f"\nmemory bandwidth (copy of {opt.bandwidth_mb} MB, read+write, best of 5): "
          f"{bandwidth / 1e9:.1f} GB/s; weights per token {bytes_per_token / 1e6:.0f} MB "
          f"-> decode bound {bound:.1f} tok/s")
    print(f"decode spread (full {n}-token runs, s): gptlab {_spread(dec['ours_full'])}, "
          f"transformers {_spread(dec['theirs_full'])}\n")
    lines = [
        "| metric | gptlab | transformers | gptlab / HF |",
        "|---|---:|---:|---:|",
        row(f"decode tok/s (batch 1, {opt.prompt_tokens}-token prompt, {n} new, greedy)", ours_tps, theirs_tps, ".1f"),
        row(f"end-to-end tok/s ({n} new incl. prefill)", n / min(dec["ours_full"]), n / min(dec["theirs_full"]), ".1f"),
        row(f"prefill ms ({opt.prefill_tokens} tokens, last-position logits)", 1e3 * min(pre["ours"]),
            1e3 * min(pre["theirs"]), ".0f"),
        row("decode, fraction of bandwidth bound", ours_tps / bound, theirs_tps / bound, ".0%"),
    ]
    if rss:
        (ob, op), (tb, tp) = rss["gptlab"], rss["transformers"]
        lines.append(row("peak RSS of loading, MB (fresh process)", op, tp, ".0f"))
        lines.append(row("  of which loading (peak after - before load)", op - ob, tp - tb, ".0f"))
    print("\n".join(lines))
    print(f"\nsummary: gptlab decodes at {ours_tps:.1f} tok/s vs transformers {theirs_tps:.1f} "
          f"({ours_tps / theirs_tps:.2f}x), prefill {min(pre['theirs']) / min(pre['ours']):.2f}x "
          f"HF speed, {ours_tps / bound:.0%} of the {bound:.0f} tok/s bandwidth bound "
          f"[{time.perf_counter() - t0:.0f} s total]")


def _spread(times: list[float]) -> str:
    return f"best {min(times):.2f} / median {statistics.median(times):.2f}"


if __name__ == "__main__":
    main()
