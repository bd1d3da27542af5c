"""Process-level tuning for training on CPUs."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_ONE_GIB = 1 << 30


def keep_large_allocations_on_heap() -> bool:
    """Ask glibc to serve large tensors from the heap and keep freed memory for reuse.

    By default glibc maps every allocation above 32 MB freshly from the kernel and unmaps it
    when freed, so each training step page-faults its big activations (the (tokens x vocab)
    logits alone are hundreds of MB): about 15% of a GPT-2 124M step on this CPU (BENCHMARKS.md).
    Returns False where the C library is not glibc (macOS, musl), which is left as it is.
    It changes the whole process, for good, so library code never calls it: the training commands
    do, on CPU, unless GPTLAB_TUNE_MALLOC=0; a Python script that trains on a CPU may call it first.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    applied = bool(mallopt(_M_MMAP_THRESHOLD, _ONE_GIB)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    log.debug("glibc malloc tuned for large tensors: %s", applied)
    return applied
