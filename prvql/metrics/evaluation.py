"""Evaluate predicted response tracks against an annotation file, as the official ``evaluate_vq.py`` does.

Only valid query sets that have a response track are evaluated, in annotation-file order (the order decides the
AP ranking when scores tie, see :mod:`prvql.metrics.ap`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prvql.data.annotations import AnnotationSet
from prvql.errors import AnnotationError
from prvql.metrics.structures import ResponseTrack
from prvql.metrics.vq2d import VQ2DMetrics, query_overlaps, query_scale, scale_metrics, summarize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationResult:
    """Headline metrics over all evaluated queries and the per-scale table (None where a scale has no query)."""

    overall: VQ2DMetrics
    scales: dict[str, VQ2DMetrics | None]

    def to_dict(self) -> dict[str, Any]:
        """``{tAP, tAP25, stAP, stAP25, success, recovery, num_queries, scales: {small: {...}, ...}}``."""
        scales = {name: m.to_dict() if m is not None else {"num_queries": 0} for name, m in self.scales.items()}
        return {**self.overall.to_dict(), "scales": scales}


def evaluate_predictions(annotations: AnnotationSet, predictions: Mapping[str, ResponseTrack]) -> EvaluationResult:
    """Metrics of ``predictions`` (``QueryRecord.key -> ResponseTrack``) on ``annotations``.

    A valid query without a prediction counts as an empty track with score 0 (what the official predictions
    writer emits for it).

    Raises:
        AnnotationError: if no valid query set has a response track, or a response track is not contiguous.
    """
    records = [r for r in annotations.records() if r.is_valid and r.response_track]
    if not records:
        raise AnnotationError(f"{annotations.path.name}: no valid query set with a response_track to evaluate")
    ground_truth = []
    for record in records:
        try:
            ground_truth.append(ResponseTrack.from_pairs(record.response_track))
        except ValueError as exc:
            raise AnnotationError(f"{annotations.path.name}: {record.key}: response_track: {exc}") from exc
    missing = [r.key for r in records if r.key not in predictions]
    if missing:
        log.warning(
            "%d of %d queries have no prediction (scored as empty tracks), e.g. %s",
            len(missing),
            len(records),
            missing[0],
        )
    tracks = [predictions[r.key] if r.key in predictions else ResponseTrack.empty() for r in records]
    overlaps = query_overlaps(tracks, ground_truth)
    return EvaluationResult(summarize(overlaps), scale_metrics(overlaps, [query_scale(g) for g in ground_truth]))
