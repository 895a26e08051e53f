"""Time and peak memory of ``prvql convert`` on full-size checkpoints laid out as the authors' (random values).

Builds a PRVQL and a VQLoC checkpoint with the published ViT-B/14 sizes from the key/shape tables
(:mod:`prvql.model.released_layout`; PRVQL ~217 M tensors' values including the dead modules, as in the released file),
then runs ``python -m prvql convert`` on each in a fresh process and prints its wall time and peak resident memory
(targets: < 30 s, < 3 GB; printed, not asserted)::

    python benchmarks/bench_convert.py [--workdir /tmp/bench_convert]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from prvql.model.released_layout import random_state, released_shapes

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout the child processes import prvql from


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="where the checkpoints go (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"torch {torch.__version__}, {os.cpu_count()} CPUs")
        for model in ("prvql", "vqloc"):
            state = random_state(released_shapes(model, "decoder"))
            src = workdir / f"{model}_vitb14.pth.tar"
            torch.save({"epoch": 60, "state_dict": state, "optimizer": {}, "best_prob": 0.5}, src)
            del state
            out = workdir / f"{model}_vitb14.safetensors"
            env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
            runner = (
                "import re, sys; from prvql.cli import main; status = main(sys.argv[1:]); "  # VmHWM: this process only
                "print('peak_kib', re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
                "sys.exit(status)"
            )
            started = time.perf_counter()
            cmd = [sys.executable, "-c", runner, "convert", "--checkpoint", str(src), "--output", str(out)]
            result = subprocess.run(cmd, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - started
            if result.returncode != 0:
                raise SystemExit(result.stderr)
            lines = result.stdout.strip().splitlines()
            peak = int(lines[-1].split()[1])
            print(lines[0])
            print(
                f"{model}: input {src.stat().st_size / 2**20:.0f} MiB, output {out.stat().st_size / 2**20:.0f} MiB, "
                f"convert {seconds:.1f} s (process start and imports included), "
                f"peak RSS {peak / 2**20:.2f} GiB"
            )


if __name__ == "__main__":
    main()
