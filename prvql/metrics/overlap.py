"""Overlaps between a predicted and a ground-truth response track, to the official VQ2D definitions.

- temporal IoU of the inclusive frame ranges (frame counts, so +1 on lengths);
- spatio-temporal IoU: intersections summed over the frames both tracks have, over the two tracks' total box
  volumes (every box of each track) minus that sum; areas without +1;
- per-frame IoU of every ground-truth frame with the predicted box on the same frame (0 where the prediction has
  none), used by the recovery metric; areas without +1.

Sums run sequentially in frame order, as the upstream Python loops do, so that values compared with a threshold
are bit-identical to upstream's. Where upstream would divide by zero (two zero-area tubes) the IoU is 0.
The boxes are paired frame by frame, so this is an elementwise IoU rather than torchvision's all-pairs ``box_iou``.
"""

from __future__ import annotations

import numpy as np

from prvql.metrics.structures import ResponseTrack


def _sequential_sum(values: np.ndarray) -> float:
    """Left-to-right float64 sum (upstream's ``total += value`` loop), 0.0 when empty."""
    return float(np.add.accumulate(values)[-1]) if len(values) else 0.0


def _paired_intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas of paired xyxy boxes: [N, 4], [N, 4] -> [N]."""
    width = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, np.inf)
    height = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, np.inf)
    return width * height


def _common_frames(pred: ResponseTrack, gt: ResponseTrack) -> tuple[slice, slice]:
    """Slices of ``pred`` and of ``gt`` covering the frames both tracks have (both are contiguous and sorted)."""
    (ps, pe), (gs, ge) = pred.extent, gt.extent
    first, last = max(ps, gs), min(pe, ge)
    if last < first:
        return slice(0, 0), slice(0, 0)
    return slice(first - ps, last - ps + 1), slice(first - gs, last - gs + 1)


def temporal_iou(pred: ResponseTrack, gt: ResponseTrack) -> float:
    """IoU of the inclusive frame ranges; an empty prediction scores 0."""
    (ps, pe), (gs, ge) = pred.extent, gt.extent
    inter = max(min(pe, ge) - max(ps, gs) + 1, 0)
    union = (pe - ps + 1) + (ge - gs + 1) - inter
    return inter / union if union > 0 else 0.0


def spatio_temporal_iou(pred: ResponseTrack, gt: ResponseTrack) -> float:
    """Tube IoU: sum of per-frame intersections / (pred volume + gt volume - that sum)."""
    pred_idx, gt_idx = _common_frames(pred, gt)
    inter = _sequential_sum(_paired_intersections(pred.boxes[pred_idx], gt.boxes[gt_idx]))
    union = _sequential_sum(pred.areas) + _sequential_sum(gt.areas) - inter
    return inter / union if union > 0 else 0.0


def frame_ious(pred: ResponseTrack, gt: ResponseTrack) -> np.ndarray:
    """float64 [len(gt)]: IoU of each ground-truth box with the predicted box on its frame, 0 if none."""
    ious = np.zeros(len(gt))
    pred_idx, gt_idx = _common_frames(pred, gt)
    inter = _paired_intersections(pred.boxes[pred_idx], gt.boxes[gt_idx])
    union = gt.areas[gt_idx] + pred.areas[pred_idx] - inter
    ious[gt_idx] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return ious
