"""experiments/demo_model/plot_frame_roc.py: ROC points whose area is the AUROC, and the plot from score caches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from experiments.demo_model.demo_heldout import METRICS, auroc, markdown
from experiments.demo_model.plot_frame_roc import roc_points
from prvql.infer.score_cache import FrameScores, ScoreCache
from tests.infer.test_verification import synthetic_annotations

ROOT = Path(__file__).resolve().parents[3]  # the repository
SCRIPT = [sys.executable, "-m", "experiments.demo_model.plot_frame_roc"]


def test_roc_points_enclose_the_auroc() -> None:
    rng = np.random.default_rng(1)
    positives, negatives = rng.normal(1, 1, 300).round(1), rng.normal(0, 1, 500).round(1)  # with ties
    fpr, tpr = roc_points(positives, negatives)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert abs(area - auroc(positives, negatives)) < 1e-9
    fpr, tpr = roc_points(np.array([0.8, 0.9]), np.array([0.1, 0.2]))  # perfect separation reaches (0, 1)
    assert any(f == 0 and t == 1 for f, t in zip(fpr, tpr, strict=True))


def test_plot_from_caches(tmp_path: Path) -> None:
    annotations = synthetic_annotations(tmp_path / "vq.json", {"1": [2, 3], "2": [5]})
    cache = ScoreCache(tmp_path / "cache")
    cache.root.mkdir()
    for key in ("a_1", "a_2"):
        cache.save(key, FrameScores(np.linspace(0, 1, 10, dtype=np.float32), np.zeros((10, 4), np.float32)))
    out = tmp_path / "roc.png"
    run = subprocess.run(
        [*SCRIPT, "--annotations", annotations, "--cache", f"m={cache.root}", "--out", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run(
        [*SCRIPT, "--annotations", annotations, "--cache", "nolabel", "--out", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "expected LABEL=DIR" in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "bad.json").write_text("{not json")
    broken = subprocess.run(
        [*SCRIPT, "--annotations", tmp_path / "bad.json", "--cache", f"m={cache.root}"]
        + ["--out", tmp_path / "other.png"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert broken.returncode == 2 and "bad.json: not valid JSON" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1 and not (tmp_path / "other.png").exists()


def test_demo_heldout_summary_counts_both_seed_criteria() -> None:
    """The summary table counts official successes (stIoU >= 0.05) and overlaps (stIoU > 0, issue 11's criterion)."""
    row = dict.fromkeys(METRICS, 0.0) | {"frame_auroc_pooled": 0.5, "frame_auroc_mean_per_query": 0.5}
    demo = [
        {"seed": s, "object": "o", "truth": [1, 2], "predicted": [1, 2], "tiou": 0.5, "stiou": stiou, "success": ok}
        for s, (stiou, ok) in enumerate([(0.3, True), (0.047, False), (0.0, False)])
    ]
    text = markdown({"baseline": row, "model": row, "demo": demo})
    assert "1 of 3 demo seeds succeed (official success: stIoU >= 0.05); 2 of 3 tracks overlap" in text
