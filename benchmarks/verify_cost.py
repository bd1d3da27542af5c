"""What checking a checkpoint's sha256 manifest costs at load: GPT-2 124M and SmolLM2-135M, same run.

One command, CPU, no network:

    .venv/bin/python benchmarks/verify_cost.py     # ~1 min; the first run also writes the two folders (1 GB)
    .venv/bin/python benchmarks/verify_cost.py --help

The models, each saved once as a gptlab checkpoint folder (float32 model.safetensors + config.json +
manifest.json) into --folder and reused: the `gpt2` preset (124M, seeded random weights, GPT-2's
tokenizer) and the built-in SmolLM2-135M-Instruct (its real weights, from the GGUF file gptlab ships).

What is measured, in this process (imports done; what `gptlab generate --model FOLDER` spends between
reading its flags and having the model): `load_model(folder)` with verification on (the default) and
off (`verify=False`, `--no-verify`), interleaved, the best of --repeats each (the least disturbed by other
processes, as benchmarks/generate.py takes), after one untimed load
that puts the files in the page cache (a cold disk adds its read time to both, once: the check and the
load read the same pages). Reported: both load times and their ratio; the check alone (`verify_files`:
sha256 of config.json and model.safetensors, best of 3) and the ratio a load would have with the check
run before it instead of on a thread beside it (`checkpoint.manifest.verifying`, what loads do).
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from generate import contention_line, cpu_snapshot, machine_lines  # benchmarks/generate.py; puts src/ on the path
from gptlab.checkpoint.manifest import TRAINING_STATE, verify_files
from gptlab.checkpoint.native import save_checkpoint
from gptlab.files import cache_dir
from gptlab.loading import load_model

MODELS = {"gpt2-124m": "gpt2", "smollm2-135m": "smollm2"}  # folder name: what load_model builds it from


@dataclass
class Options:
    folder: Path = cache_dir() / "benchmarks" / "verify-cost"  # the checkpoints, written once
    repeats: int = 7  # timed loads per model and setting


@dataclass
class Row:
    name: str
    megabytes: float  # of model.safetensors
    verified: float  # best load seconds, verification on
    unverified: float  # best load seconds, verification off
    check: float  # best seconds of the check alone (what it would add to a load, done before it)


def parse_args(argv: list[str] | None = None) -> Options:
    defaults = Options()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--folder", type=Path, default=defaults.folder, help="where the two checkpoints are kept")
    p.add_argument("--repeats", type=int, default=defaults.repeats, help="timed loads per model and setting")
    args = p.parse_args(argv)
    return Options(args.folder, args.repeats)


def checkpoint(folder: Path, spec: str) -> Path:
    """`spec` saved as a gptlab checkpoint at `folder`, unless an earlier run did."""
    if not (folder / "manifest.json").is_file():
        loaded = load_model(spec)
        save_checkpoint(loaded.model, loaded.tokenizer, folder, loaded.meta)
    return folder


def _seconds(call: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(name: str, folder: Path, repeats: int) -> Row:
    """Interleaved loads with and without the check, after one that fills the page cache."""
    load_model(str(folder))
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for verify in (True, False):
            times[verify].append(_seconds(functools.partial(load_model, str(folder), verify=verify)))
    check = min(_seconds(functools.partial(verify_files, folder, TRAINING_STATE)) for _ in range(3))
    megabytes = (folder / "model.safetensors").stat().st_size / 1e6
    return Row(name, megabytes, min(times[True]), min(times[False]), check)


def report(rows: list[Row]) -> list[str]:
    lines = [f"{'checkpoint':<14}{'weights':>9}{'--no-verify':>13}{'verified':>10}{'ratio':>7}"
             f"{'check alone':>13}{'sequential ratio':>18}"]
    for r in rows:
        lines.append(f"{r.name:<14}{r.megabytes:>6.0f} MB{r.unverified:>11.3f} s{r.verified:>8.3f} s"
                     f"{r.verified / r.unverified:>6.2f}x{r.check:>7.3f} s ({r.megabytes / r.check:>4.0f} MB/s)"
                     f"{(r.unverified + r.check) / r.unverified:>7.2f}x")
    return lines


def main(argv: list[str] | None = None) -> None:
    opt = parse_args(argv)
    logging.getLogger("gptlab").setLevel(logging.ERROR)  # --no-verify's warning, once per timed load
    folders = {name: checkpoint(opt.folder / name, spec) for name, spec in MODELS.items()}
    before = cpu_snapshot()
    rows = [measure(name, folder, opt.repeats) for name, folder in folders.items()]
    after = cpu_snapshot()
    print("\n".join([*machine_lines(), f"loads        best of {opt.repeats}, interleaved, page cache warm", "",
                     *report(rows), "", contention_line(before, after)]))


if __name__ == "__main__":
    main()
