"""prvql's glibc allocator settings: a freed large buffer is reused instead of being unmapped and faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROGRAM = """
import resource, sys
from prvql.allocator import tune_allocator
applied = tune_allocator() if sys.argv[1] == "tuned" else False
import ctypes
ctypes.create_string_buffer(64 * 2**20)  # a 64 MB buffer (malloc + memset), freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    ctypes.create_string_buffer(64 * 2**20)
print(int(applied), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, **env: str) -> tuple[bool, int]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environ.update(PYTHONPATH=str(ROOT), **env)
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], env=environ, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "1", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tuned_allocator_reuses_large_buffers() -> None:
    applied, tuned = _faults("tuned")
    _, default = _faults("default")
    assert applied
    assert default > 5 * 16_000 * 0.9  # 5 x 64 MB of 4 KiB pages faulted in again by default
    assert tuned < default / 10


def test_user_settings_and_opt_out_are_respected() -> None:
    assert _faults("tuned", PRVQL_MALLOC="default")[0] is False
    assert _faults("tuned", MALLOC_MMAP_THRESHOLD_="131072")[0] is False
