"""Loading memory at real size: a 1B-parameter Llama in bfloat16, gptlab vs `transformers`, same run.

One command, CPU, no network:

    .venv/bin/python benchmarks/load_memory.py     # ~2 min quiet; the first run also writes the folder (2.5 GB)
    .venv/bin/python benchmarks/load_memory.py --help

The model: Llama-3.2-1B's shape (gptlab's `llama-3.2-1b` preset: 1.24B parameters, vocabulary 128,256,
16 blocks of width 2048, 8 key/value heads, llama3 rope scaling, tied embeddings) with seeded random
weights, built by `transformers.LlamaForCausalLM` directly in bfloat16 (on the meta device, then
filled: never a float32 copy) and saved with `save_pretrained`, beside SmolLM2's tokenizer.json
(gptlab needs one in a Llama folder; the 128,256 rows pad its 49,152 tokens). It is written once,
into --folder, and reused.

What is measured:
- peak RSS of loading, each library in a fresh subprocess, the file in the page cache (read once
  before, so neither pays the disk): VmHWM after the imports (the baseline: interpreter, torch, the
  library), after loading in bfloat16 (gptlab: `load_model(folder, dtype=torch.bfloat16)`, the path
  of `gptlab generate --dtype bfloat16`; transformers: `from_pretrained(folder, dtype=torch.bfloat16)`),
  and after one forward pass (transformers maps the file lazily: its weights become resident when
  first read). Reported: the peak and the growth over the baseline, each over the weight bytes (the
  file's tensors); load seconds; the parameters' dtypes.
- decode tokens/s, batch 1, greedy, both models in this process on the same random prompt: each
  library's own generate loop for N and for 1 new tokens, decode = (N - 1) / (t(N) - t(1)), best of
  repeats after a warm-up, runs interleaved (as benchmarks/generate.py does).
- CPU contention during the run, with a warning when the machine was not quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from generate import (  # benchmarks/generate.py, beside this script; it puts the checkout's src/ on the path
    REPO,
    Runner,
    agreement,
    contention_line,
    cpu_snapshot,
    decode_rates,
    gptlab_generate,
    hf_generate,
    machine_lines,
)
from gptlab.files import cache_dir

PRESET = "llama-3.2-1b"
TOKENIZER_VOCAB = 49152  # SmolLM2's tokens: the prompt's ids stay below it


@dataclass
class Options:
    """Where the model lives and how decoding is timed (filled from the command line)."""

    folder: Path = cache_dir() / "benchmarks" / f"{PRESET}-random-bf16"  # written once, then reused
    prompt_tokens: int = 32  # decode prompt length
    new_tokens: int = 32  # tokens generated per decode run
    repeats: int = 3  # timed repeats per decode measurement (after one warm-up)
    seed: int = 0  # the prompt, and the weights of a folder written now
    threads: int | None = None  # torch threads (default: torch's)
    skip_decode: bool = False  # loading memory only


def parse_args(argv: list[str] | None = None) -> Options:
    defaults = Options()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--folder", type=Path, default=defaults.folder,
                   help="the model folder: written there on the first run (2.5 GB), reused after")
    p.add_argument("--prompt-tokens", type=int, default=defaults.prompt_tokens, help="decode prompt length")
    p.add_argument("--new-tokens", type=int, default=defaults.new_tokens, help="new tokens per decode run")
    p.add_argument("--repeats", type=int, default=defaults.repeats, help="timed decode repeats (after a warm-up)")
    p.add_argument("--seed", type=int, default=defaults.seed,
                   help="seed for the prompt, and for the weights when the folder is written")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--skip-decode", action="store_true", help="measure loading memory only")
    args = p.parse_args(argv)
    if args.new_tokens < 2 or args.prompt_tokens < 1 or args.repeats < 1:
        p.error("need --new-tokens >= 2, --prompt-tokens >= 1, --repeats >= 1")
    return Options(**{k.replace("-", "_"): v for k, v in vars(args).items()})


# ---------------------------------------------------------------- the model folder

def model_folder(folder: Path, seed: int) -> Path:
    """The random-weight folder, written on first use (into a sibling, then renamed: never half there)."""
    if (folder / "model.safetensors").is_file():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    print(f"writing {folder} (once) ...", flush=True)
    write_random_llama(partial, seed)
    partial.rename(folder)
    return folder


def write_random_llama(folder: Path, seed: int) -> None:
    """`transformers.LlamaForCausalLM` in the preset's shape with seeded random bfloat16 weights, saved with
    `save_pretrained`, and SmolLM2's tokenizer files beside it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from gptlab.loading import load_model
    from gptlab.models import family_of, preset_config
    from gptlab.tokenizer import hf_files

    ours = preset_config(PRESET)
    config = LlamaConfig.from_dict(family_of(ours).hf.write_config(ours))
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to(torch.bfloat16).to_empty(device="cpu")  # bfloat16 from the start: 2.5 GB, not 5
    model.tie_weights()  # to_empty gives the head a tensor of its own
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, config.initializer_range, generator=generator)
    model.save_pretrained(folder)
    for name, text in hf_files(load_model("smollm2").tokenizer).items():
        (folder / name).write_text(text, encoding="utf-8")


def weight_bytes(file: Path) -> int:
    """Bytes of a safetensors file's tensors: the file less its 8-byte length and JSON header."""
    with open(file, "rb") as f:
        header = int.from_bytes(f.read(8), "little")
    return file.stat().st_size - 8 - header


# ---------------------------------------------------------------- loading memory, one fresh process each

LOAD_SCRIPT = """
import json, re, sys, time
import torch
{imports}
# VmHWM is this process's peak RSS; unlike ru_maxrss it does not inherit the parent's peak
peak = lambda: int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1]) * 1024
baseline = peak()
start = time.perf_counter()
model = {load}
seconds = time.perf_counter() - start
loaded = peak()
with torch.inference_mode():
    model(torch.tensor([[0]]))  # touches every weight (lazily mapped files become resident)
dtypes = sorted({{str(p.dtype).removeprefix("torch.") for p in model.parameters()}})
print(json.dumps(dict(baseline=baseline, loaded=loaded, forward=peak(), seconds=seconds, dtypes=dtypes)))
"""
LOADERS = {
    "gptlab": ("from gptlab.loading import load_model",
               "load_model(sys.argv[1], dtype=torch.bfloat16).model"),
    "transformers": ("from transformers import AutoModelForCausalLM",
                     "AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)"),
}


def load_peaks(folder: Path) -> dict[str, dict]:
    """Each library's loading, measured in a fresh process: peak bytes after imports, load, one forward.
    The file is read once first, so that both load from the page cache (which RSS does not count):
    else the first to load pays the disk for both."""
    with open(folder / "model.safetensors", "rb") as file:
        while file.read(2**26):
            pass
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    result = {}
    for name, (imports, load) in LOADERS.items():
        code = LOAD_SCRIPT.format(imports=imports, load=load)
        done = subprocess.run([sys.executable, "-c", code, str(folder)], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed to load {folder}:\n{done.stderr[-3000:]}")
        result[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name} loaded in a fresh process", flush=True)
    return result


# ---------------------------------------------------------------- decoding

def decode_speeds(opt: Options, folder: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Batch-1 greedy decode tokens/s of both libraries, and how many leading tokens gptlab's greedy
    continuation shares with transformers'."""
    from transformers import AutoModelForCausalLM

    from gptlab.loading import load_model

    ours = load_model(str(folder), dtype=torch.bfloat16).model
    theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    runners = [Runner("gptlab bf16", lambda prompts, n: gptlab_generate(ours, prompts, n), None, 0),
               Runner("transformers bf16", lambda prompts, n: hf_generate(theirs, prompts, n), None, 0)]
    generator = torch.Generator().manual_seed(opt.seed)
    prompt = torch.randint(0, TOKENIZER_VOCAB, (1, opt.prompt_tokens), generator=generator).tolist()
    greedy = {r.name: r.generate(prompt, opt.new_tokens)[0] for r in runners}
    rates = decode_rates(runners, prompt, 1, opt.new_tokens, opt.repeats)
    return rates, {name: agreement(greedy["transformers bf16"], ids) for name, ids in greedy.items()}


# ---------------------------------------------------------------- report

def report(weights: int, peaks: dict[str, dict], rates: dict[str, float], same: dict[str, str],
           opt: Options) -> list[str]:
    """Markdown tables: loading memory (MB = 2^20 bytes) per library, then decode speed."""
    mb = 2**20
    lines = [f"weights: {weights / mb:,.0f} MB ({weights:,} bytes of bfloat16 tensors in model.safetensors)", "",
             "| loading in bfloat16 (fresh process) | baseline MB (imports) | peak MB, load | peak / weights | growth "
             "MB | growth / weights | peak MB, load + 1 forward | growth / weights | load s | parameter dtypes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, p in peaks.items():
        grown, grown_forward = p["loaded"] - p["baseline"], p["forward"] - p["baseline"]
        lines.append(f"| {name} | {p['baseline'] / mb:,.0f} | {p['loaded'] / mb:,.0f} | {p['loaded'] / weights:.2f}x | "
                     f"{grown / mb:,.0f} | "
                     f"{grown / weights:.2f}x | {p['forward'] / mb:,.0f} | {grown_forward / weights:.2f}x | "
                     f"{p['seconds']:.1f} | {', '.join(p['dtypes'])} |")
    if rates:
        hf = rates["transformers bf16"]
        lines += ["", f"| decode, batch 1, greedy ({opt.prompt_tokens}-token prompt, {opt.new_tokens} new) | tok/s | "
                      "vs transformers | leading tokens equal to transformers' |", "|---|---:|---:|---:|"]
        lines += [f"| {name} | {rate:.2f} | {rate / hf:.2f}x | {same[name]} |" for name, rate in rates.items()]
    return lines


def main(argv: list[str] | None = None) -> None:
    opt = parse_args(argv)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    transformers.utils.logging.disable_progress_bar()
    folder = model_folder(opt.folder.expanduser(), opt.seed)
    before = cpu_snapshot()
    print("\n".join(machine_lines()))
    weights = weight_bytes(folder / "model.safetensors")
    peaks = load_peaks(folder)
    rates, same = ({}, {}) if opt.skip_decode else decode_speeds(opt, folder)
    after = cpu_snapshot()
    print(f"\nmodel        {folder} ({PRESET} shape, random bfloat16 weights saved by transformers)")
    print("memory: VmHWM (peak RSS) of a fresh process; growth = peak - the peak after its imports\n")
    print("\n".join(report(weights, peaks, rates, same, opt)))
    print(f"\n{contention_line(before, after)} [{after[0] - before[0]:.0f} s]")


if __name__ == "__main__":
    main()
