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
- memory-bandwidth bound for decode: bytes of weights read per token against the measured read
  bandwidth (the sum of a large array on torch's threads: a decode step only reads its weights;
  the copy bandwidth, on torch's threads and on one, is printed beside it). Both drift up to 2x
  within an hour on this VM, so compare fractions within one run; each library's fraction.
- CPU contention: CPU time used by other processes and stolen by the hypervisor during the run,
  with a warning when the machine was not quiet.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
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

from gptlab.generation import GenerationSettings, generate_batch  # noqa: E402
from gptlab.loading import load_model  # noqa: E402

PAD_ID = 50256
GPT2_124M = dict(n_layer=12, n_head=12, n_embd=768)  # (layers, heads, width) of gpt2 124M


MODES = ("gptlab fp32", "gptlab bf16", "gptlab int8", "gptlab int4", "hf fp32", "hf bf16", "llama.cpp")
COMPILED = tuple(f"{mode} compiled" for mode in MODES if mode.startswith("gptlab"))  # --compile's decode step


@dataclass
class Options:
    """Benchmark sizes and repeats (filled from the command line)."""

    model: str = "gpt2"  # gpt2 (random 124M, saved with save_pretrained) or smollm2 (the built-in GGUF file)
    modes: tuple[str, ...] = MODES  # what runs (llama.cpp: SmolLM2 only, when llama-cpp-python is installed)
    # and COMPILED (each compiles the decode step first, as --compile does; its time is reported)
    batch_sizes: tuple[int, ...] = (1, 8, 32)  # decode batch sizes (same-length prompts, no padding)
    prompt_tokens: int = 32  # decode prompt length
    new_tokens: int = 128  # tokens generated per decode run at batch 1
    batch_new_tokens: int = 32  # tokens generated per decode run at batch > 1
    prefill_tokens: int = 512  # prompt length of the prefill benchmark
    repeats: int = 3  # timed repeats per measurement (after one warm-up)
    bandwidth_mb: int = 1024  # size of the array streamed to measure memory bandwidth
    seed: int = 0  # weights and prompt
    threads: int | None = None  # torch threads for all libraries (default: torch's default)
    skip_rss: bool = False  # skip the loading subprocesses
    profile: bool = False  # also print torch.profiler's top operators of one decode run each


def parse_args(argv: list[str] | None = None) -> Options:
    defaults = Options()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=("gpt2", "smollm2"), default=defaults.model,
                   help="gpt2: random GPT-2 124M; smollm2: the built-in SmolLM2-135M (Llama, GQA) read by all")
    p.add_argument("--modes", nargs="+", choices=MODES + COMPILED, default=list(MODES), metavar="MODE",
                   help=f"what to run: {', '.join(MODES + COMPILED)}")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=list(defaults.batch_sizes), metavar="B",
                   help="decode batch sizes")
    p.add_argument("--prompt-tokens", type=int, default=defaults.prompt_tokens, help="decode prompt length")
    p.add_argument("--new-tokens", type=int, default=defaults.new_tokens, help="new tokens per batch-1 decode run")
    p.add_argument("--batch-new-tokens", type=int, default=defaults.batch_new_tokens,
                   help="new tokens per decode run at batch > 1")
    p.add_argument("--prefill-tokens", type=int, default=defaults.prefill_tokens, help="prefill prompt length")
    p.add_argument("--repeats", type=int, default=defaults.repeats, help="timed repeats (after a warm-up)")
    p.add_argument("--bandwidth-mb", type=int, default=defaults.bandwidth_mb, help="array size for the bandwidths")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed for weights and prompts")
    p.add_argument("--threads", type=int, default=None, help="torch (and llama.cpp) threads (default: torch's)")
    p.add_argument("--skip-rss", action="store_true", help="skip the loading-RSS subprocesses")
    p.add_argument("--profile", action="store_true", help="print top operators of one decode run each")
    args = p.parse_args(argv)
    if min(args.new_tokens, args.batch_new_tokens) < 2 or args.prompt_tokens < 1 or args.repeats < 1:
        p.error("need --new-tokens and --batch-new-tokens >= 2, --prompt-tokens >= 1, --repeats >= 1")
    if args.prompt_tokens + args.new_tokens > 1024 or args.prefill_tokens > 1024:
        p.error("GPT-2's context is 1024 tokens: prompt + new tokens and --prefill-tokens must fit")
    values = {k.replace("-", "_"): v for k, v in vars(args).items()}
    return Options(**{**values, "modes": tuple(values["modes"]), "batch_sizes": tuple(values["batch_sizes"])})


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


def smollm2_file() -> Path:
    from gptlab.files import builtin_model_path

    return builtin_model_path("smollm2")


# ---------------------------------------------------------------- the runners: one per library and mode

@dataclass
class Runner:
    """One library in one mode: generate greedily for a batch of prompts, prefill, and the bytes of
    weights one decode step reads (the bandwidth bound's numerator)."""

    name: str
    generate: Callable[[list[list[int]], int], list[list[int]]]
    prefill: Callable[[torch.Tensor], object] | None
    bytes_per_token: int
    max_batch: int = 1024
    compile_seconds: float | None = None  # time torch.compile took (compiled gptlab modes)


GPTLAB_MODES = {"gptlab fp32": (torch.float32, None), "gptlab bf16": (torch.bfloat16, None),
                "gptlab int8": (None, "int8"), "gptlab int4": (None, "int4")}


def gptlab_runner(name: str, spec: str, rows: int) -> Runner:
    """gptlab in one mode; a compiled one compiles its decode step for up to `rows` rows first."""
    from gptlab.generation import compile_decode
    from gptlab.quantize import stored_bytes

    dtype, quantize = GPTLAB_MODES[name.removesuffix(" compiled")]
    model = load_model(spec, dtype=dtype, quantize=quantize).model.eval()
    compiled = compile_decode(model, rows) if name.endswith("compiled") else None
    if compiled is not None and compiled.error:
        raise SystemExit(f"{name}: torch.compile failed: {compiled.error}")
    lookups = [model.wte.weight] + ([model.wpe.weight] if model.wpe is not None else [])  # one row read per token
    read = stored_bytes(model) - sum(t.numel() * t.element_size() for t in lookups)
    if getattr(model.lm_head, "weight", None) is model.wte.weight:  # a tied float head reads the whole matrix
        read += model.wte.weight.numel() * model.wte.weight.element_size()
    return Runner(name, lambda prompts, n: gptlab_generate(model, prompts, n), lambda ids: gptlab_prefill(model, ids),
                  read, compile_seconds=compiled.seconds if compiled else None)


def hf_runner(name: str, spec: str) -> Runner:
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if name.endswith("bf16") else torch.float32
    if spec == "smollm2":
        path = smollm2_file()
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    else:
        model = GPT2LMHeadModel.from_pretrained(spec)  # default attention (sdpa)
    model = model.to(dtype).eval()
    read = sum(p.numel() * p.element_size() for p in model.parameters())  # tied head: the embedding once
    return Runner(name, lambda prompts, n: hf_generate(model, prompts, n), lambda ids: hf_prefill(model, ids), read)


def llama_cpp_runner(threads: int, context: int) -> Runner:
    """llama.cpp on the same GGUF file (Q4_1), greedy, batch 1, same threads."""
    from llama_cpp import Llama

    path = smollm2_file()
    llm = Llama(str(path), n_threads=threads, n_threads_batch=threads, n_ctx=context, n_batch=context,
                verbose=False)

    def run(prompts: list[list[int]], n: int) -> list[list[int]]:
        llm.reset()
        out = []
        for token in llm.generate(prompts[0], top_k=1, temp=0.0, reset=True):
            out.append(token)
            if len(out) == n:
                return [out]
        return [out]

    def prefill(ids: torch.Tensor) -> None:
        llm.reset()
        llm.eval(ids[0].tolist())

    return Runner("llama.cpp Q4_1", run, prefill, path.stat().st_size, max_batch=1)


def gptlab_generate(model, prompts: list[list[int]], n: int) -> list[list[int]]:
    return generate_batch(model, prompts, GenerationSettings(max_new_tokens=n, temperature=0))


@torch.inference_mode()
def hf_generate(model, prompts: list[list[int]], n: int) -> list[list[int]]:
    out = model.generate(torch.tensor(prompts), do_sample=False, max_new_tokens=n, min_new_tokens=n,
                         eos_token_id=None, pad_token_id=PAD_ID)
    return out[:, len(prompts[0]):].tolist()


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


def agreement(reference: list[int], other: list[int]) -> str:
    same = next((i for i, (x, y) in enumerate(zip(reference, other)) if x != y), min(len(reference), len(other)))
    return f"{same}/{len(reference)}"


def profile_decode(calls: dict[str, Callable[[], object]], rows: int = 8) -> None:
    """Print the operators that take the most CPU time in one run of each call."""
    from torch.profiler import ProfilerActivity, profile

    for name, call in calls.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            call()
        print(f"\nprofile of one decode run, {name}:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def memory_bandwidth(megabytes: int, threads: int, repeats: int = 5, read_only: bool = False) -> float:
    """Bytes/s streaming a large tensor on `threads` threads, best of `repeats`: a copy (read + write
    counted) or, `read_only`, a sum (reads only, as a decode step reads its weights)."""
    n = megabytes * 2**20 // 4
    src, dst = torch.ones(n), torch.empty(n)
    dst.copy_(src)  # touch the pages
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        best = min(_timed(src.sum if read_only else lambda: dst.copy_(src)) for _ in range(repeats))
    finally:
        torch.set_num_threads(before)
    return (1 if read_only else 2) * n * 4 / best


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
GPTLAB_LOADER = ("from gptlab.loading import load_model", "load_model(sys.argv[1]).model")
HF_LOADER = ("from transformers import GPT2LMHeadModel", "GPT2LMHeadModel.from_pretrained(sys.argv[1])")


def saved_checkpoints(spec: str, folder: Path) -> dict[str, Path]:
    """gptlab checkpoints of the model in float32, int8 and int4 (written once, for the loading RSS)."""
    from gptlab.checkpoint.native import save_checkpoint

    saved = {}
    for scheme in (None, "int8", "int4"):
        loaded = load_model(spec, quantize=scheme)
        saved[f"gptlab {scheme or 'fp32'} checkpoint"] = save_checkpoint(
            loaded.model, loaded.tokenizer, folder / (scheme or "fp32"), loaded.meta)
    return saved


def load_rss(targets: dict[str, tuple[tuple[str, str], Path]]) -> dict[str, tuple[float, float, float]]:
    """Peak RSS MB after imports, after loading, after a first forward; one fresh process each."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    result = {}
    for name, ((imports, load), folder) in targets.items():
        code = RSS_SCRIPT.format(imports=imports, load=load)
        out = subprocess.run([sys.executable, "-c", code, str(folder)], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
        result[name] = tuple(float(x) for x in out)
    return result


# ---------------------------------------------------------------- run and report

@dataclass
class Results:
    """Raw measurements (seconds, bytes, MB) from which the tables are computed."""

    decode: dict[str, dict[int, float]]  # runner -> batch size -> decode tokens/s (all rows)
    prefill: dict[str, list[float]]  # runner -> seconds of one forward over the long prompt
    bytes_per_token: dict[str, int]  # runner -> weight bytes read per decode step
    agreement: dict[str, str]  # runner -> leading greedy tokens equal to gptlab fp32's
    rss: dict[str, tuple[float, ...]]  # loader -> peak MB (imports, load, load + forward)
    bandwidth: float  # bytes/s, torch's default threads (best of the start and end samples)
    bandwidth_1t: float  # bytes/s, one thread
    read_bandwidth: float  # bytes/s read (a sum), torch's default threads: the decode bound's denominator
    compile_seconds: dict[str, float]  # compiled runner -> seconds torch.compile took


def build_runners(opt: Options, spec: str) -> list[Runner]:
    runners = []
    for mode in opt.modes:
        if mode.startswith("gptlab"):
            runners.append(gptlab_runner(mode, spec, max(opt.batch_sizes)))
        elif mode.startswith("hf"):
            runners.append(hf_runner(mode, spec))
        elif opt.model == "smollm2" and importlib.util.find_spec("llama_cpp") is not None:
            context = max(opt.prompt_tokens + opt.new_tokens, opt.prefill_tokens) + 8  # decode runs and the prefill
            runners.append(llama_cpp_runner(torch.get_num_threads(), context))
        else:
            print("llama.cpp: skipped (SmolLM2 only, and needs pip install 'gptlab[bench]')")
    return runners


def decode_rates(runners: list[Runner], prompts: list[list[int]], batch: int, n: int,
                 repeats: int) -> dict[str, float]:
    """Tokens/s of every runner at `batch` rows: batch * (n - 1) / (t(n tokens) - t(1 token))."""
    rows = [prompts[i % len(prompts)] for i in range(batch)]
    able = [r for r in runners if batch <= r.max_batch]
    calls = {f"{r.name}|{k}": (lambda r=r, k=k: r.generate(rows, k)) for r in able for k in (n, 1)}
    times = best_times(calls, repeats)
    return {r.name: batch * (n - 1) / (min(times[f"{r.name}|{n}"]) - min(times[f"{r.name}|1"])) for r in able}


def measure(opt: Options) -> Results:
    """Every measurement, printing progress lines as phases finish."""
    bw_start = memory_bandwidth(opt.bandwidth_mb, torch.get_num_threads())
    with tempfile.TemporaryDirectory(prefix="gptlab-bench-") as tmp:
        spec = "smollm2" if opt.model == "smollm2" else str(save_hf_folder(Path(tmp) / "gpt2-random", opt.seed))
        runners = build_runners(opt, spec)
        print(f"model        {opt.model}: {', '.join(r.name for r in runners)}", flush=True)
        gen = torch.Generator().manual_seed(opt.seed)
        vocab = 49152 if opt.model == "smollm2" else 50257
        prompts = torch.randint(0, vocab, (max(opt.batch_sizes), opt.prompt_tokens), generator=gen).tolist()
        long_ids = torch.randint(0, vocab, (1, opt.prefill_tokens), generator=gen)
        greedy = {r.name: r.generate(prompts[:1], opt.new_tokens)[0] for r in runners}
        reference = greedy.get("gptlab fp32", next(iter(greedy.values())))
        decode: dict[str, dict[int, float]] = {r.name: {} for r in runners}
        for batch in opt.batch_sizes:
            n = opt.new_tokens if batch == 1 else opt.batch_new_tokens
            for name, rate in decode_rates(runners, prompts, batch, n, opt.repeats).items():
                decode[name][batch] = rate
            print(f"decode batch {batch} done", flush=True)
        if opt.profile:
            profile_decode({r.name: lambda r=r: r.generate(prompts[:1], opt.new_tokens) for r in runners})
        prefill = best_times({r.name: lambda r=r: r.prefill(long_ids) for r in runners}, opt.repeats)
        rss = {} if opt.skip_rss else load_rss(rss_targets(opt, spec, Path(tmp)))
    bw_end = memory_bandwidth(opt.bandwidth_mb, torch.get_num_threads())
    read = memory_bandwidth(opt.bandwidth_mb, torch.get_num_threads(), read_only=True)
    return Results(decode, prefill, {r.name: r.bytes_per_token for r in runners},
                   {name: agreement(reference, ids) for name, ids in greedy.items()}, rss,
                   max(bw_start, bw_end), memory_bandwidth(opt.bandwidth_mb, 1), read,
                   {r.name: r.compile_seconds for r in runners if r.compile_seconds is not None})


def rss_targets(opt: Options, spec: str, tmp: Path) -> dict[str, tuple[tuple[str, str], Path]]:
    """What the loading-RSS subprocesses load: gptlab's float and quantized checkpoints (and, for GPT-2,
    the transformers folder with each library)."""
    targets = {name: (GPTLAB_LOADER, folder) for name, folder in saved_checkpoints(spec, tmp / "saved").items()}
    if opt.model == "gpt2":
        targets["gptlab, HF folder"] = (GPTLAB_LOADER, Path(spec))
        targets["transformers, HF folder"] = (HF_LOADER, Path(spec))
    return targets


def report(opt: Options, res: Results) -> list[str]:
    """The markdown tables: decode and prefill per runner, then loading memory."""
    base = {name: res.decode.get(name, {}) for name in ("hf fp32", "hf bf16")}
    batches = opt.batch_sizes
    lines = ["| runner | " + " | ".join(f"decode tok/s batch {b}" for b in batches)
             + " | vs HF fp32 (b1) | vs HF bf16 (b1) | MB read/token | of bound (b1) | prefill ms | prefill vs HF "
               "(same dtype) | greedy = gptlab fp32 |",
             "|---|" + "---:|" * (len(batches) + 7)]
    for name, rates in res.decode.items():
        cells = [f"{rates[b]:.1f}" if b in rates else "" for b in batches]
        vs = [f"{rates[1] / base[h][1]:.2f}x" if 1 in rates and 1 in base[h] else "" for h in base]
        bound = res.read_bandwidth / res.bytes_per_token[name]
        peer = "hf bf16" if name.removesuffix(" compiled").endswith(("bf16", "int8", "int4")) else "hf fp32"
        pre = min(res.prefill[name])
        pre_vs = f"{min(res.prefill[peer]) / pre:.2f}x speed" if peer in res.prefill and name != peer else ""
        lines.append(f"| {name} | {' | '.join(cells)} | {' | '.join(vs)} | {res.bytes_per_token[name] / 1e6:.0f} | "
                     f"{rates.get(1, 0) / bound:.0%} | {1e3 * pre:.0f} | {pre_vs} | {res.agreement[name]} |")
    if res.compile_seconds:
        lines += ["", "compiling the decode step (1 row, then up to the largest batch): "
                  + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in res.compile_seconds.items())]
    if res.rss:
        lines += ["", "| loading (fresh process) | peak RSS MB, load + 1 forward | growth: load only | growth: load + "
                      "forward |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {c:.0f} | {b - a:.0f} | {c - a:.0f} |" for name, (a, b, c) in res.rss.items()]
    return lines


def main(argv: list[str] | None = None) -> None:
    opt = parse_args(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    torch._dynamo.config.recompile_limit = 64  # compiled modes: each model's decode step is its own graph
    transformers.utils.logging.disable_progress_bar()
    before = cpu_snapshot()
    print("\n".join(machine_lines()))
    res = measure(opt)
    after = cpu_snapshot()
    print(f"\nmemory bandwidth ({opt.bandwidth_mb} MB, best of 5): read (torch sum) "
          f"{res.read_bandwidth / 1e9:.1f} GB/s on {torch.get_num_threads()} threads; "
          f"copy (read + write) {res.bandwidth / 1e9:.1f} GB/s, "
          f"{res.bandwidth_1t / 1e9:.1f} GB/s on 1 thread; bound = read bandwidth / bytes read per token")
    print(f"decode: batch * (N-1) / (t(generate N) - t(generate 1)), N = {opt.new_tokens} at batch 1, "
          f"{opt.batch_new_tokens} above, best of {opt.repeats} after a warm-up; prefill: {opt.prefill_tokens} "
          "tokens, last-position logits\n")
    print("\n".join(report(opt, res)))
    print(f"\n{contention_line(before, after)} [{after[0] - before[0]:.0f} s]")


if __name__ == "__main__":
    main()
