"""experiments/demo_model/fit_verification.py: the logistic fit of colour verification's coefficients."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prvql.infer.score_cache import FrameScores, ScoreCache
from tests.infer.test_verification import synthetic_annotations

ROOT = Path(__file__).resolve().parents[3]  # the repository
SCRIPT = [sys.executable, "-m", "experiments.demo_model.fit_verification"]


def test_fit_verification_recovers_the_coefficients(tmp_path: Path) -> None:
    """Curves whose labels follow a known logistic model of (logit, distance): the fit finds its coefficients."""
    rng = np.random.default_rng(0)
    frames, queries = 20, 300
    truth = (0.8, -0.15, 1.0)  # score_weight, colour_weight, bias
    cache = ScoreCache(tmp_path / "cache")
    cache.root.mkdir()
    occurrences = {}
    for q in range(queries):
        logits = rng.normal(0, 2, frames)
        distances = rng.uniform(0, 30, frames)
        p = 1 / (1 + np.exp(-(truth[0] * logits + truth[1] * distances + truth[2])))
        occurrences[str(q)] = [int(j) for j in np.flatnonzero(rng.random(frames) < p)]
        scores = (1 / (1 + np.exp(-logits))).astype(np.float32)
        cache.save(f"a_{q}", FrameScores(scores, np.zeros((frames, 4), np.float32), distances.astype(np.float32)))
    annotations = synthetic_annotations(tmp_path / "vq.json", occurrences)
    out = tmp_path / "fit.json"
    run = subprocess.run(
        [*SCRIPT, "--annotations", annotations, "--cache", cache.root] + ["--out", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    fitted = json.loads(run.stdout.splitlines()[0])
    assert fitted["queries"] == queries and fitted["frames"] == queries * frames
    assert fitted["score_weight"] == pytest.approx(truth[0], abs=0.08)
    assert fitted["colour_weight"] == pytest.approx(truth[1], abs=0.02)
    assert fitted["bias"] == pytest.approx(truth[2], abs=0.25)
    assert "--set inference.verification.enabled=true" in run.stdout
    assert json.loads(out.read_text()) == fitted


def test_fit_verification_needs_colour_distances(tmp_path: Path) -> None:
    cache = ScoreCache(tmp_path / "cache")
    cache.root.mkdir()
    cache.save("a_1", FrameScores(np.full(20, 0.5, np.float32), np.zeros((20, 4), np.float32)))
    annotations = synthetic_annotations(tmp_path / "vq.json", {"1": [3, 4]})
    run = subprocess.run(
        [*SCRIPT, "--annotations", annotations, "--cache", cache.root],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "a_1.npz: no colour distances (predict with inference.verification.enabled=true)" in run.stderr
    assert "Traceback" not in run.stderr
