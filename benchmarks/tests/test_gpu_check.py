"""benchmarks/gpu_check.sh (the accelerator sections of `python -m benchmarks`) on the CPU in --quick mode: the
plumbing runs and writes the JSON the GPU run fills."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository


def test_gpu_check_quick_on_cpu_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(out), "--device", "cpu", "--quick"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    result = json.loads(out.read_text())
    rows = result["throughput"]
    assert {(r["windows"], r["dtype"]) for r in rows} == {(1, "fp32"), (2, "fp32"), (1, "bf16"), (2, "bf16")}
    assert all(r["backbone_fps"] > 0 and r["stages_fps"] > 0 for r in rows)
    agreement = result["bf16_vs_fp32"]
    assert 0 < agreement["max_logit_abs_diff"] < agreement["logit_scale"]  # bf16 differs, but not wildly
    assert agreement["same_tracks"].endswith("/2") and len(agreement["tracks"]) == 2
    assert result["training_step"]["seconds_per_step"] > 0
