"""CRC-32C speed: gptlab's pure-Python fallback vs the google-crc32c package, on the same bytes.

    python benchmarks/crc32c.py [--mb 8]

Prints MB/s of each and what checking GPT-2 124M's 497,759,232-byte data file would take.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

from gptlab.checkpoint import crc32c

GPT2_124M_BYTES = 497_759_232


def measure(name: str, checksum, data: bytes) -> float:
    start = time.perf_counter()
    value = checksum(memoryview(data))
    seconds = time.perf_counter() - start
    rate = len(data) / seconds / 1e6
    print(f"{name:<16} {rate:10.1f} MB/s  crc {value:08x}  124M in ~{GPT2_124M_BYTES / len(data) * seconds:.1f} s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=8.0, help="megabytes of random data to checksum (default 8)")
    data = os.urandom(int(parser.parse_args().mb * 1e6))
    slow = measure("pure Python", crc32c._python_crc32c, data)
    if importlib.util.find_spec("google_crc32c") is None:
        print("google-crc32c      not installed (pip install 'gptlab[tf]')")
        return
    fast = measure("google-crc32c", crc32c.crc32c, data)
    print(f"ratio            {fast / slow:10.0f}x")


if __name__ == "__main__":
    main()
