"""Confidence and verdict: the signals of a curve, the logistic combination, the threshold, the words, and the
fields track.json gets."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit

from prvql.config import ConfidenceConfig
from prvql.infer.confidence import SIGNALS, confidence_signals, judge, verdict_text
from prvql.infer.geometric import GeometricResult
from prvql.infer.postprocess import PostProcessor

SCORES = np.array([0.1, 0.1, 0.2, 0.8, 0.7, 0.1, 0.1], dtype=np.float32)


def test_signals_of_a_curve() -> None:
    _, window = PostProcessor()(SCORES, np.zeros((7, 4)))
    geo = GeometricResult(3, 4, np.zeros((2, 4)), True, {3: 40, 1: 5})
    signals = dict(zip(SIGNALS, confidence_signals(SCORES, window, geo), strict=True))
    s = SCORES.astype(np.float64)
    np.testing.assert_allclose(signals["peak_logit"], logit(s[3]), rtol=1e-6)
    np.testing.assert_allclose(signals["prominence"], (s[3] - np.median(s)) / (s.std() + 0.01), rtol=1e-6)
    np.testing.assert_allclose(signals["log_inliers"], np.log(41.0))
    assert signals["verified"] == 1.0
    plain = dict(zip(SIGNALS, confidence_signals(SCORES, window, None), strict=True))
    assert plain["log_inliers"] == plain["verified"] == 0.0
    unverified = GeometricResult(3, 4, np.zeros((2, 4)), False, {3: 7})
    assert confidence_signals(SCORES, window, unverified)[SIGNALS.index("verified")] == 0.0


def test_the_crop_source_run_does_not_count_as_inliers() -> None:
    geo = GeometricResult(
        3, 4, np.zeros((2, 4)), True, {3: 12, 8: 90, 9: 120}, crop_source_frame=9, crop_source_run=(8, 9)
    )
    assert geo.best_inliers == 12


def test_judge_combines_and_thresholds() -> None:
    _, window = PostProcessor()(SCORES, np.zeros((7, 4)))
    geo = GeometricResult(3, 4, np.zeros((2, 4)), True, {3: 40})
    cfg = ConfidenceConfig(
        peak_weight=0.5, prominence_weight=-0.2, inlier_weight=1.0, verified_weight=0.7, bias=-3.0, threshold=0.6
    )
    verdict = judge(cfg, SCORES, window, geo)
    x = confidence_signals(SCORES, window, geo)
    expected = expit(0.5 * x[0] - 0.2 * x[1] + x[2] + 0.7 * x[3] - 3.0)
    assert verdict.confidence == pytest.approx(expected)
    assert verdict.found == (expected >= 0.6)
    assert list(verdict.signals) == list(SIGNALS)
    low = judge(ConfidenceConfig(inlier_weight=1.0, bias=-20.0), SCORES, window, geo)
    assert not low.found and low.word == "not_found"


def test_verdict_in_words() -> None:
    _, window = PostProcessor()(SCORES, np.zeros((7, 4)))
    sure = judge(ConfidenceConfig(bias=20.0), SCORES, window, None)
    assert verdict_text(sure, 3, 4) == f"found, confidence {sure.confidence:.2f}"
    unsure = judge(ConfidenceConfig(bias=-20.0), SCORES, window, None)
    assert verdict_text(unsure, 30, 41) == "not found (best guess frames 30-41, confidence 0.00)"


def test_track_json_carries_the_verdict() -> None:
    from prvql.infer.locate import LocateResult
    from prvql.infer.outputs import locate_report

    track, window = PostProcessor()(SCORES, np.zeros((7, 4)))
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    result = LocateResult(SCORES, np.zeros((7, 4), np.float32), track, window, (8, 8), image, (0, 0, 8, 8))
    assert "verdict" not in locate_report(result, 5.0)
    geo = GeometricResult(3, 4, np.zeros((2, 4)), False, {3: 7})
    verdict = judge(ConfidenceConfig(bias=-20.0), SCORES, window, geo)
    import dataclasses

    report = locate_report(dataclasses.replace(result, verdict=verdict, geometric=geo), 5.0)
    assert report["verdict"] == "not_found" and report["confidence"] == verdict.confidence
    assert report["geometric"] == {"verified": False, "inliers": 7, "crop_source_frame": None, "colour_distance": None}
    assert report["confidence_signals"] == verdict.signals


def test_score_mode_confidence_scores_tracks_with_it(tiny_cfg) -> None:  # noqa: ANN001
    from prvql.infer.locate import LocateResult, with_verdict

    cfg = ConfidenceConfig(prominence_weight=0.5, bias=-1.0)
    track, window = PostProcessor(score_mode="confidence", confidence=cfg)(SCORES, np.zeros((7, 4)))
    assert track.score == pytest.approx(judge(cfg, SCORES, window, None).confidence)
    assert 0.0 < track.score < 1.0
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    plain, _ = PostProcessor()(SCORES, np.zeros((7, 4)))
    result = LocateResult(SCORES, np.zeros((7, 4), np.float32), plain, window, (8, 8), image, (0, 0, 8, 8))
    geo = GeometricResult(3, 4, np.zeros((2, 4)), True, {3: 50})
    import dataclasses

    result = dataclasses.replace(result, geometric=geo)
    assert with_verdict(tiny_cfg, result).track.score == 1.0  # score: constant keeps the papers' score
    tiny_cfg.inference.score = "confidence"
    judged = with_verdict(tiny_cfg, result)
    assert judged.track.score == judged.verdict.confidence  # with the inliers: not the curve-only confidence
    assert judged.verdict.signals["log_inliers"] == pytest.approx(np.log(51.0))
    np.testing.assert_array_equal(judged.track.frames, plain.frames)
