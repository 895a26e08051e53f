"""The official Ego4D VQ2D metrics (EGO4D/episodic-memory ``VQ2D/vq2d/metrics``), written from their definitions.

One predicted track per query, one ground-truth track per query, in the same order (the annotation file's):

- ``tap``: temporal AP averaged over tIoU thresholds 0.25, 0.5, 0.75, 0.95; ``tap25``: temporal AP at 0.25.
- ``stap`` / ``stap25``: the same with the spatio-temporal IoU.
- ``success``: % of queries whose prediction has stIoU >= 0.05.
- ``recovery``: % of ground-truth frames (pooled over all queries, a micro average) whose box has IoU >= 0.5 with
  the predicted box on that frame.

:func:`compute_vq2d_metrics` is the official headline evaluation (the pairing ``"all": ("all", "all")``: every
query; upstream's "all" area range [0, 1e10) px² holds every real box). :func:`compute_scale_metrics` is the
per-scale table of the PRVQL paper (App. C): queries split by their largest ground-truth box area.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from prvql.metrics.ap import detection_ap
from prvql.metrics.overlap import frame_ious, spatio_temporal_iou, temporal_iou
from prvql.metrics.structures import ResponseTrack

AP_THRESHOLDS = (0.25, 0.5, 0.75, 0.95)
SUCCESS_THRESHOLD = 0.05
RECOVERY_THRESHOLD = 0.5
# Half-open [lo, hi) ranges of the largest ground-truth box area in original pixels (PRVQL App. C, VQLoC).
SCALE_RANGES: dict[str, tuple[float, float]] = {
    "small": (0.0, 64.0**2),
    "medium": (64.0**2, 192.0**2),
    "large": (192.0**2, 1e10),
}


@dataclass(frozen=True)
class VQ2DMetrics:
    """VQ2D metrics of a set of queries. AP values in [0, 1]; ``success`` and ``recovery`` in percent."""

    tap: float
    tap25: float
    stap: float
    stap25: float
    success: float
    recovery: float
    num_queries: int

    def to_dict(self) -> dict[str, float | int]:
        """Keys as the official ``evaluate_vq.py`` reports them: tAP, tAP25, stAP, stAP25, success, recovery."""
        names = {"tap": "tAP", "tap25": "tAP25", "stap": "stAP", "stap25": "stAP25"}
        return {names.get(k, k): v for k, v in asdict(self).items()}


@dataclass(frozen=True, eq=False)
class QueryOverlaps:
    """Per-query quantities the metrics are computed from (all [N], in query order).

    Attributes:
        scores: prediction scores (rank the predictions for AP).
        tiou: temporal IoU of each prediction with its ground truth.
        stiou: spatio-temporal IoU.
        recovered: ground-truth frames whose box has IoU >= RECOVERY_THRESHOLD with the predicted box.
        gt_frames: ground-truth track lengths.
    """

    scores: np.ndarray
    tiou: np.ndarray
    stiou: np.ndarray
    recovered: np.ndarray
    gt_frames: np.ndarray

    def select(self, index: np.ndarray) -> QueryOverlaps:
        """The queries at ``index`` (int [M], kept in the given order)."""
        return QueryOverlaps(*(getattr(self, f.name)[index] for f in fields(self)))


def query_overlaps(predictions: Sequence[ResponseTrack], ground_truth: Sequence[ResponseTrack]) -> QueryOverlaps:
    """Overlaps of each query's prediction with its ground truth.

    Args:
        predictions: one predicted track per query (its ``score`` ranks it for AP).
        ground_truth: the annotated track of each query, same order; must not be empty tracks.

    Raises:
        ValueError: if the lists differ in length or a ground-truth track is empty.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truth)} ground-truth tracks")
    if any(len(gt) == 0 for gt in ground_truth):
        raise ValueError("a ground-truth response track is empty")
    pairs = list(zip(predictions, ground_truth, strict=True))
    return QueryOverlaps(
        scores=np.array([p.score for p in predictions], dtype=np.float64),
        tiou=np.array([temporal_iou(p, g) for p, g in pairs], dtype=np.float64),
        stiou=np.array([spatio_temporal_iou(p, g) for p, g in pairs], dtype=np.float64),
        recovered=np.array([np.sum(frame_ious(p, g) >= RECOVERY_THRESHOLD) for p, g in pairs], dtype=np.int64),
        gt_frames=np.array([len(g) for g in ground_truth], dtype=np.int64),
    )


def summarize(overlaps: QueryOverlaps) -> VQ2DMetrics:
    """The metrics of a non-empty set of queries from their overlaps."""
    if len(overlaps.scores) == 0:
        raise ValueError("no queries to evaluate")
    tap = detection_ap(overlaps.tiou, overlaps.scores, AP_THRESHOLDS)
    stap = detection_ap(overlaps.stiou, overlaps.scores, AP_THRESHOLDS)
    at_25 = AP_THRESHOLDS.index(0.25)
    return VQ2DMetrics(
        tap=float(tap.mean()),
        tap25=float(tap[at_25]),
        stap=float(stap.mean()),
        stap25=float(stap[at_25]),
        success=float(np.mean(overlaps.stiou >= SUCCESS_THRESHOLD) * 100.0),
        recovery=float(100.0 * overlaps.recovered.sum() / overlaps.gt_frames.sum()),
        num_queries=len(overlaps.scores),
    )


def compute_vq2d_metrics(predictions: Sequence[ResponseTrack], ground_truth: Sequence[ResponseTrack]) -> VQ2DMetrics:
    """Official VQ2D metrics over all queries (see :func:`query_overlaps` for the arguments).

    Raises:
        ValueError: if the lists differ in length, are empty, or a ground-truth track is empty.
    """
    return summarize(query_overlaps(predictions, ground_truth))


def max_box_area(track: ResponseTrack) -> float:
    """Largest ``|x2 - x1| * |y2 - y1|`` of a track's boxes, in pixels (0 for an empty track)."""
    if len(track) == 0:
        return 0.0
    return float(np.max(np.abs(track.boxes[:, 2] - track.boxes[:, 0]) * np.abs(track.boxes[:, 3] - track.boxes[:, 1])))


def query_scale(track: ResponseTrack) -> str:
    """``"small"``, ``"medium"`` or ``"large"`` from the largest ground-truth box area (see SCALE_RANGES)."""
    area = max_box_area(track)
    for name, (lo, hi) in SCALE_RANGES.items():
        if lo <= area < hi:
            return name
    raise ValueError(f"box area {area} is outside every scale range")


def compute_scale_metrics(
    predictions: Sequence[ResponseTrack], ground_truth: Sequence[ResponseTrack]
) -> dict[str, VQ2DMetrics | None]:
    """The metrics computed separately on small, medium and large queries (pairings ("all", scale)).

    The AP ranking is done within each subset, keeping the annotation order, as upstream does for a pairing.
    A scale without queries maps to None.
    """
    return scale_metrics(query_overlaps(predictions, ground_truth), [query_scale(g) for g in ground_truth])


def scale_metrics(overlaps: QueryOverlaps, scales: Sequence[str]) -> dict[str, VQ2DMetrics | None]:
    """:func:`compute_scale_metrics` from precomputed overlaps and each query's scale name."""
    out: dict[str, VQ2DMetrics | None] = {}
    for name in SCALE_RANGES:
        keep = np.array([i for i, s in enumerate(scales) if s == name], dtype=np.int64)
        out[name] = summarize(overlaps.select(keep)) if len(keep) else None
    return out
