"""Generation benchmark: gptlab vs Hugging Face `transformers` on identical GPT-2 weights, same run.

One command, CPU, no network:

    .venv/bin/python benchmarks/generate.py            # defaults: gpt2 124M, 5 repeats
    .venv/bin/python benchmarks/generate.py --model smollm2   # real SmolLM2-135M weights (GGUF, both libraries)
    .venv/bin/python benchmarks/generate.py --help

What is measured (same method for both libraries, runs interleaved gptlab/HF):
- decode tokens/s, batch 1, greedy: each library's own generate loop is timed for N new tokens
  and for 1 new token (prefill + first token) on the same prompt; decode = (N - 1) tokens over
  the difference of the two best-of-repeats times. Generate-loop overheads are included.
- prefill ms: one no-cache forward pass over a long prompt, logits for the last position only
  (what generation needs), best of repeats.
- peak RSS (VmHWM) of loading the saved folder, then of one forward pass (which makes lazily
  memory-mapped weights resident), each library in a fresh subprocess.
- memory-bandwidth bound for decode: bytes of weights read per token (fp32 parameter bytes)
  against a measured large-array copy bandwidth (on torch's threads and on one thread, since
  batch-1 matrix-vector products ran on one core here); each library's fraction of that bound.
- CPU contention: CPU time used by other processes and stolen by the hypervisor during the run,
  with a warning when the machine was not quiet.
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

    model: str = "gpt2"  # gpt2 (random 124M, saved with save_pretrained) or smollm2 (the built-in GGUF file)
    prompt_tokens: int = 32  # decode prompt length
    new_tokens: int = 128  # tokens generated per decode run
    prefill_tokens: int = 512  # prompt length of the prefill benchmark
    repeats: int = 5  # timed repeats per measurement (after one warm-up)
    bandwidth_mb: int = 1024  # size of the tensor copied to measure memory bandwidth
    seed: int = 0  # weights and prompt
    threads: int | None = None  # torch threads for both libraries (default: torch's default)
    skip_rss: bool = False  # skip the two loading subprocesses
    profile: bool = False  # also print torch.profiler's top operators of one decode run each


def parse_args(argv: list[str] | None = None) -> Options:
    defaults = Options()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=("gpt2", "smollm2"), default=defaults.model,
                   help="gpt2: random GPT-2 124M; smollm2: the built-in SmolLM2-135M (Llama, GQA) read by both")
    p.add_argument("--prompt-tokens", type=int, default=defaults.prompt_tokens, help="decode prompt length")
    p.add_argument("--new-tokens", type=int, default=defaults.new_tokens, help="new tokens per decode run")
    p.add_argument("--prefill-tokens", type=int, default=defaults.prefill_tokens, help="prefill prompt length")
    p.add_argument("--repeats", type=int, default=defaults.repeats, help="timed repeats (after a warm-up)")
    p.add_argument("--bandwidth-mb", type=int, default=defaults.bandwidth_mb, help="copy size for bandwidth")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed for weights and prompts")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--skip-rss", action="store_true", help="skip the loading-RSS subprocesses")
    p.add_argument("--profile", action="store_true", help="print top operators of one decode run each")
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


def cpu_snapshot() -> tuple[float, float, float, float]:
    """(wall s, busy CPU s of the whole machine, stolen CPU s, this process's CPU s incl. children)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    hz, own = os.sysconf("SC_CLK_TCK"), os.times()
    mine = own.user + own.system + own.children_user + own.children_system
    return time.perf_counter(), (user + nice + system + irq + softirq) / hz, steal / hz, mine


def contention_line(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    """How much CPU other processes and the hypervisor (steal) took during the run; warns."""
    wall, busy, steal, mine = (b - a for a, b in zip(before, after))
    capacity = wall * (os.cpu_count() or 1)
    others, stolen = max(busy - mine, 0.0) / capacity, steal / capacity
    line = (f"cpu contention during the run: other processes {others:.0%}, hypervisor steal {stolen:.0%} "
            f"of {os.cpu_count()} cores; this process {mine / capacity:.0%}")
    if others > 0.05 or stolen > 0.02:
        line += "  WARNING: the machine was not quiet; timings are unreliable, run again"
    return line


def save_hf_folder(folder: Path, seed: int) -> Path:
    """A seeded random `transformers` GPT-2 124M written with `save_pretrained`."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024, **GPT2_124M))
    model.save_pretrained(folder)
    return folder


def load_smollm2() -> tuple[torch.nn.Module, torch.nn.Module]:
    """gptlab and HF models dequantized from the same built-in GGUF file, in eval mode."""
    from transformers import AutoModelForCausalLM

    from gptlab.files import builtin_model_path

    path = builtin_model_path("smollm2")
    theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return load_model("smollm2").model.eval(), theirs


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


def profile_decode(calls: dict[str, Callable[[], object]], rows: int = 8) -> None:
    """Print the operators that take the most CPU time in one run of each call."""
    from torch.profiler import ProfilerActivity, profile

    for name, call in calls.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            call()
        print(f"\nprofile of one decode run, {name}:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def memory_bandwidth(megabytes: int, threads: int, repeats: int = 5) -> float:
    """Bytes/s of a large tensor copy on `threads` threads, counting read + write, best of `repeats`."""
    n = megabytes * 2**20 // 4
    src, dst = torch.ones(n), torch.empty(n)
    dst.copy_(src)  # touch the pages
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        best = min(_timed(lambda: dst.copy_(src)) for _ in range(repeats))
    finally:
        torch.set_num_threads(before)
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
loaded = peak()
with torch.inference_mode():
    model(torch.tensor([[0]]))  # touches every weight (lazily mapped files become resident)
print(before, loaded, peak())
"""
LOADERS = {
    "gptlab": ("from gptlab.checkpoint import load_model", "load_model(sys.argv[1]).model"),
    "transformers": ("from transformers import GPT2LMHeadModel", "GPT2LMHeadModel.from_pretrained(sys.argv[1])"),
}


def load_rss(folder: Path) -> dict[str, tuple[float, float, float]]:
    """Peak RSS MB after imports, after loading, after a first forward; one fresh process each."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    result = {}
    for name, (imports, load) in LOADERS.items():
        code = RSS_SCRIPT.format(imports=imports, load=load)
        out = subprocess.run([sys.executable, "-c", code, str(folder)], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        result[name] = tuple(float(x) for x in out)
    return result


# ---------------------------------------------------------------- run and report

@dataclass
class Results:
    """Raw measurements (seconds, bytes, MB) from which the table is computed."""

    n_params: int
    decode: dict[str, list[float]]  # {ours,theirs}_{full,first}: generate N tokens / 1 token
    prefill: dict[str, list[float]]  # ours, theirs: one forward over the long prompt
    rss: dict[str, tuple[float, ...]]  # library -> peak MB (imports, load, load + forward)
    bandwidth: float  # bytes/s, torch's default threads (best of the start and end samples)
    bandwidth_samples: tuple[float, float]  # bytes/s measured before and after the models ran
    bandwidth_1t: float  # bytes/s, one thread


def measure(opt: Options) -> Results:
    """Every measurement, printing progress lines as phases finish."""
    n = opt.new_tokens
    bw_start = memory_bandwidth(opt.bandwidth_mb, torch.get_num_threads())
    with tempfile.TemporaryDirectory(prefix="gptlab-bench-") as tmp:
        if opt.model == "smollm2":
            ours, theirs = load_smollm2()
            print(f"model        built-in SmolLM2-135M-Instruct ({ours.num_parameters() / 1e6:.1f}M params, Llama "
                  f"with grouped-query attention), dequantized to fp32 from the same GGUF file by both; "
                  f"HF attention: {theirs.config._attn_implementation}")
        else:
            folder = save_hf_folder(Path(tmp) / "gpt2-random", opt.seed)
            weights_mb = (folder / "model.safetensors").stat().st_size / 2**20
            ours, theirs = load_both(folder)
            print(f"model        gpt2 124M shape, seeded random weights ({ours.num_parameters() / 1e6:.1f}M "
                  f"params, {weights_mb:.0f} MB safetensors), fp32, same folder for both; "
                  f"HF attention: {theirs.config._attn_implementation}")
        gen = torch.Generator().manual_seed(opt.seed)
        vocab = ours.config.vocab_size
        prompt = torch.randint(0, vocab, (opt.prompt_tokens,), generator=gen).tolist()
        long_ids = torch.randint(0, vocab, (1, opt.prefill_tokens), generator=gen)
        print(check_agreement(ours, theirs, prompt, n), flush=True)
        rss = {} if opt.skip_rss or opt.model != "gpt2" else load_rss(folder)
        decode = best_times({
            "ours_full": lambda: gptlab_generate(ours, prompt, n),
            "theirs_full": lambda: hf_generate(theirs, prompt, n),
            "ours_first": lambda: gptlab_generate(ours, prompt, 1),
            "theirs_first": lambda: hf_generate(theirs, prompt, 1),
        }, opt.repeats)
        if opt.profile:
            profile_decode({"gptlab": lambda: gptlab_generate(ours, prompt, n),
                            "transformers": lambda: hf_generate(theirs, prompt, n)})
        prefill = best_times({
            "ours": lambda: gptlab_prefill(ours, long_ids),
            "theirs": lambda: hf_prefill(theirs, long_ids),
        }, opt.repeats)
    bw_end = memory_bandwidth(opt.bandwidth_mb, torch.get_num_threads())
    bw_1t = memory_bandwidth(opt.bandwidth_mb, 1)
    return Results(ours.num_parameters(), decode, prefill, rss, max(bw_start, bw_end), (bw_start, bw_end), bw_1t)


def row(label: str, ours: float, theirs: float, fmt: str, ratio: bool = True) -> str:
    r = f"{ours / theirs:.2f}x" if ratio and theirs else ""
    return f"| {label} | {ours:{fmt}} | {theirs:{fmt}} | {r} |"


def report(opt: Options, res: Results) -> tuple[list[str], str]:
    """The markdown table and the one-line summary."""
    n, dec, pre = opt.new_tokens, res.decode, res.prefill
    tps = {who: (n - 1) / (min(dec[f"{who}_full"]) - min(dec[f"{who}_first"])) for who in ("ours", "theirs")}
    bound = res.bandwidth / (4 * res.n_params)  # every fp32 weight is read once per decoded token
    bound_1t = res.bandwidth_1t / (4 * res.n_params)
    lines = [
        "| metric | gptlab | transformers | gptlab / HF |",
        "|---|---:|---:|---:|",
        row(f"decode tok/s (batch 1, {opt.prompt_tokens}-token prompt, {n} new, greedy)",
            tps["ours"], tps["theirs"], ".1f"),
        row(f"end-to-end tok/s ({n} new incl. prefill)", n / min(dec["ours_full"]),
            n / min(dec["theirs_full"]), ".1f"),
        row(f"prefill ms ({opt.prefill_tokens} tokens, last-position logits)", 1e3 * min(pre["ours"]),
            1e3 * min(pre["theirs"]), ".0f"),
        row(f"decode as fraction of bandwidth bound ({bound:.0f} tok/s, {torch.get_num_threads()} threads)",
            tps["ours"] / bound, tps["theirs"] / bound, ".0%"),
        row(f"decode as fraction of 1-thread bandwidth bound ({bound_1t:.0f} tok/s)", tps["ours"] / bound_1t,
            tps["theirs"] / bound_1t, ".0%"),
    ]
    if res.rss:
        (o0, o1, o2), (h0, h1, h2) = res.rss["gptlab"], res.rss["transformers"]
        lines += [
            row("peak RSS MB, fresh process, load + 1 forward", o2, h2, ".0f"),
            row("  peak RSS growth MB: load only", o1 - o0, h1 - h0, ".0f", ratio=False),
            row("  peak RSS growth MB: load + 1 forward", o2 - o0, h2 - h0, ".0f"),
        ]
    summary = (f"summary: gptlab decode {tps['ours']:.1f} tok/s vs transformers {tps['theirs']:.1f} "
               f"({tps['ours'] / tps['theirs']:.2f}x); prefill {1e3 * min(pre['ours']):.0f} vs "
               f"{1e3 * min(pre['theirs']):.0f} ms ({min(pre['theirs']) / min(pre['ours']):.2f}x HF speed); "
               f"decode at {tps['ours'] / bound:.0%} (gptlab) and {tps['theirs'] / bound:.0%} (HF) of "
               f"the {bound:.0f} tok/s memory-bandwidth bound")
    return lines, summary


def main(argv: list[str] | None = None) -> None:
    opt = parse_args(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    transformers.utils.logging.disable_progress_bar()
    before = cpu_snapshot()
    print("\n".join(machine_lines()))
    res = measure(opt)
    after = cpu_snapshot()
    n, mb = opt.new_tokens, 4 * res.n_params / 1e6
    start_bw, end_bw = (b / 1e9 for b in res.bandwidth_samples)
    print(f"\nmemory bandwidth (torch copy of {opt.bandwidth_mb} MB, read + write, best of 5): "
          f"{res.bandwidth / 1e9:.1f} GB/s on {torch.get_num_threads()} threads (before/after the "
          f"models ran: {start_bw:.1f}/{end_bw:.1f}), {res.bandwidth_1t / 1e9:.1f} GB/s on 1 thread")
    print(f"weights read per decoded token: {mb:.0f} MB (fp32 parameters) -> bound "
          f"{res.bandwidth / 1e6 / mb:.1f} tok/s ({res.bandwidth_1t / 1e6 / mb:.1f} on 1 thread)")
    print(f"decode timing: (N-1) / (t(generate N) - t(generate 1)), N = {n}, best of {opt.repeats} "
          f"after a warm-up; t(generate {n}) s: gptlab {_spread(res.decode['ours_full'])}, "
          f"transformers {_spread(res.decode['theirs_full'])}\n")
    lines, summary = report(opt, res)
    print("\n".join(lines))
    print(f"\n{contention_line(before, after)}")
    print(f"{summary} [{after[0] - before[0]:.0f} s]")


def _spread(times: list[float]) -> str:
    return f"best {min(times):.2f} / median {statistics.median(times):.2f}"


if __name__ == "__main__":
    main()
