"""glibc malloc settings for CPU inference: keep large freed buffers instead of returning them to the OS.

By default glibc serves every allocation above a (dynamic) threshold with its own ``mmap`` and unmaps it on free,
so a CPU forward pass faults the pages of its large activation buffers in again on every call: millions of minor
page faults per 30-frame window of a ViT-B/14 at 448 px. Raising the mmap and trim thresholds makes freed buffers
stay in the heap and be reused. Cost: the process keeps its peak heap resident (it does not shrink after the
largest call), and the heap fragments. Measured (``python -m benchmarks --sections e2e``, benchmarks/README.md):
one paper-size window of ``prvql_vitb14`` on the 2-core CPU, 0.6 M instead of 6.1 M minor faults, 1.10-1.35x the
frames/s, and about +1.0 GB peak RSS (4.0 GB instead of 3.0 GB).

``prvql`` applies this at start-up through ``mallopt`` (before torch is imported, so every tensor buffer is
affected); a user who set ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` keeps their own values, and
``PRVQL_MALLOC=default`` leaves glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GiB, above any single buffer of a window batch


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True if applied (glibc on Linux only)."""
    if not sys.platform.startswith("linux") or os.environ.get("PRVQL_MALLOC") == "default":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))
