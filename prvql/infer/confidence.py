"""How sure an answer is, and "not found" (not in the paper: ours).

The model's peak score means different things on different videos, so it cannot tell a find from a guess by
itself. The confidence is a logistic regression on signals of one search (:func:`confidence_signals`):

- ``peak_logit``: the logit of the smoothed score at the track's peak;
- ``prominence``: how far that peak stands above the rest of the curve, ``(peak - median) / (std + 0.01)``;
- ``log_inliers``: ``log(1 + inliers)``, the most RANSAC inliers geometric verification found on any frame it
  tried outside the crop's own frame (:mod:`prvql.infer.geometric`; 0 when ``inference.geometric`` is off);
- ``verified``: 1 when geometric verification moved the track onto verified frames, else 0.

Also tried on the fitting data and left out (they did not help both sets): the highest other peak of the curve
over the track's peak, and the colour distance of the track's box to the crop
(:func:`prvql.infer.geometric.colour_distance`; the synthetic episodes' white-balance drift makes right tracks as
far in colour as wrong ones).

``confidence = sigmoid(w · signals + bias)``, the probability that the track is right (stIoU >= 0.05 with the
truth), and the verdict is ``"found"`` when ``confidence >= threshold``, else ``"not_found"`` (the track is kept as
the best guess). The coefficients and the threshold (``inference.confidence``) are fitted on the tuning half of
the real-footage set together with a synthetic fitting split (``benchmarks/real/fit_confidence.py``); the held-out
sets are never used to choose them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit

from prvql.config import ConfidenceConfig
from prvql.infer.geometric import GeometricResult
from prvql.infer.postprocess import TrackWindow

SIGNALS = ("peak_logit", "prominence", "log_inliers", "verified")
# the ``inference.confidence`` key weighting each signal
WEIGHTS = ("peak_weight", "prominence_weight", "inlier_weight", "verified_weight")
EPS = 1e-4  # scores are clipped to [EPS, 1 - EPS] before the logit


@dataclass(frozen=True)
class Verdict:
    """The confidence of an answer.

    Attributes:
        confidence: probability in [0, 1] that the track is right.
        found: ``confidence >= threshold``.
        signals: the signals it came from, by name (:data:`SIGNALS`).
    """

    confidence: float
    found: bool
    signals: dict[str, float]

    @property
    def word(self) -> str:
        """``"found"`` or ``"not_found"`` (``track.json``'s ``verdict``)."""
        return "found" if self.found else "not_found"


def confidence_signals(scores: np.ndarray, window: TrackWindow, geometric: GeometricResult | None) -> np.ndarray:
    """float64 [4] signals (:data:`SIGNALS`) of a [N] score curve, its track window and the geometric findings."""
    scores = np.asarray(scores, dtype=np.float64)
    peak = float(np.clip(window.peak_score, EPS, 1 - EPS))
    prominence = (window.peak_score - float(np.median(scores))) / (float(scores.std()) + 0.01)
    inliers = 0 if geometric is None else geometric.best_inliers
    verified = float(geometric is not None and geometric.verified)
    return np.array([float(logit(peak)), prominence, float(np.log1p(inliers)), verified])


def judge(cfg: ConfidenceConfig, scores: np.ndarray, window: TrackWindow, geometric: GeometricResult | None) -> Verdict:
    """The confidence and verdict of one search with the coefficients of ``inference.confidence``."""
    signals = confidence_signals(scores, window, geometric)
    weights = np.array([getattr(cfg, key) for key in WEIGHTS])
    confidence = float(expit(float(weights @ signals) + cfg.bias))
    return Verdict(confidence, confidence >= cfg.threshold, dict(zip(SIGNALS, signals.tolist(), strict=True)))


def verdict_text(verdict: Verdict, start: int, end: int) -> str:
    """The verdict in words: ``"found, confidence 0.93"`` or ``"not found (best guess frames 3-9, confidence
    0.08)"`` (``start``/``end``: the track's frames as the reader numbers them)."""
    if verdict.found:
        return f"found, confidence {verdict.confidence:.2f}"
    return f"not found (best guess frames {start}-{end}, confidence {verdict.confidence:.2f})"
