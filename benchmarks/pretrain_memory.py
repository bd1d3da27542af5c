"""Pretraining memory on a 100 MB text file: the peak RSS of `gptlab pretrain` while it tokenizes the corpus
into its token cache, and when it maps that cache in again.

One command, CPU, no network:

    .venv/bin/python benchmarks/pretrain_memory.py                       # this checkout (~3 min)
    .venv/bin/python benchmarks/pretrain_memory.py --src OTHER/src       # another checkout, e.g. the code before

The corpus: Tiny Shakespeare from the data mirror, repeated to --megabytes (written once into the cache
folder, then reused). Each run is `python -m gptlab pretrain` in a fresh subprocess (gpt-tiny, context 64,
batch 4, 3 steps, one evaluation batch, no samples) on the CPU: first with an empty token cache (it tokenizes),
then again with the cache it wrote (it reads). Peak RSS is the child's own `ru_maxrss` (os.wait4), so the two
runs never mix; wall seconds are the subprocess's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from gptlab.files import cache_dir, fetch  # noqa: E402  (after the path: the checkout's own gptlab)

STEPS = ["--model", "gpt-tiny", "--context-length", "64", "--batch-size", "4", "--max-steps", "3",
         "--eval-every", "3", "--eval-batches", "1", "--warmup-steps", "0", "--sample-tokens", "0", "--device", "cpu"]


def corpus(megabytes: int) -> Path:
    """Tiny Shakespeare repeated to `megabytes` MB (10^6 bytes), written once."""
    path = cache_dir() / "benchmarks" / f"shakespeare-{megabytes}mb.txt"
    if not path.is_file():
        text = fetch("tinyshakespeare").read_bytes()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            written = 0
            while written < megabytes * 10**6:
                out.write(text)
                written += len(text)
    return path


def pretrain(src: Path, data: Path, cache: Path, out: Path) -> tuple[float, float, str]:
    """(peak RSS in MB, wall seconds, the gptlab it ran) of one `gptlab pretrain` from the checkout at `src`."""
    env = {**os.environ, "PYTHONPATH": str(src), "GPTLAB_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    code = "import runpy, sys, gptlab; print(gptlab.__file__, file=sys.stderr); runpy.run_module('gptlab', " \
           "run_name='__main__')"
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code, "pretrain", "--data", str(data), "--out", str(out), *STEPS],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"gptlab pretrain failed ({child.returncode}):\n{stderr}")
    return usage.ru_maxrss / 1024, seconds, stderr.splitlines()[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=REPO / "src", help="the src/ folder of the gptlab to measure")
    p.add_argument("--megabytes", type=int, default=100, help="size of the text file")
    args = p.parse_args()
    data = corpus(args.megabytes)
    with tempfile.TemporaryDirectory(prefix="pretrain-memory-") as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "run"
        print(f"corpus {data} ({data.stat().st_size / 1e6:.1f} MB), gptlab from {args.src}")
        for label in ("tokenizes (empty cache)", "reads its token cache"):
            rss, seconds, module = pretrain(args.src.resolve(), data, cache, out)
            shutil.rmtree(out, ignore_errors=True)
            print(f"  {label:26s} peak RSS {rss:7.0f} MB   {seconds:6.1f} s   ({module})")


if __name__ == "__main__":
    main()
