"""Average precision as the official VQ2D code computes it (ActivityNet-style detection AP, VOC-2011 integration).

Each query has exactly one ground-truth track and one predicted track, so a prediction is a true positive at a
threshold exactly when its overlap with its own query's ground truth is >= the threshold, and the number of
positives is the number of queries.

Ranking: upstream sorts with ``scores.argsort()[::-1]`` (numpy's default, unstable sort, then reversed). When all
scores are equal (every published VQ2D pipeline writes score 1.0) numpy returns the identity permutation, so the
predictions are ranked in REVERSE annotation order and the AP depends on the order of the annotation file.
:func:`rank_predictions` makes the identical call so that ties are broken exactly as upstream does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rank_predictions(scores: np.ndarray) -> np.ndarray:
    """Indices of ``scores`` [N] from best to worst, ties broken as upstream (see the module docstring)."""
    return np.asarray(scores, dtype=np.float64).argsort()[::-1]


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC-2011 AP: precision made non-increasing from the right, summed over the steps of recall.

    Args:
        precision: [N] precision after each ranked prediction.
        recall: [N] recall after each ranked prediction.
    """
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mprec[steps]))


def detection_ap(overlaps: np.ndarray, scores: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """AP at each threshold for one prediction per query.

    Args:
        overlaps: float [N] IoU (temporal or spatio-temporal) of each query's prediction with its ground truth.
        scores: float [N] prediction scores, used only to rank.
        thresholds: the IoU thresholds.

    Returns:
        float64 [len(thresholds)]; zeros when there are no queries.
    """
    overlaps = np.asarray(overlaps, dtype=np.float64)
    if len(overlaps) == 0:
        return np.zeros(len(thresholds))
    ranked = overlaps[rank_predictions(scores)]
    tp = (ranked[None, :] >= np.asarray(thresholds, dtype=np.float64)[:, None]).astype(np.float64)
    tp_cum = np.cumsum(tp, axis=1)
    fp_cum = np.cumsum(1.0 - tp, axis=1)
    recall = tp_cum / float(len(overlaps))
    precision = tp_cum / (tp_cum + fp_cum)
    return np.array([interpolated_ap(p, r) for p, r in zip(precision, recall, strict=True)])
