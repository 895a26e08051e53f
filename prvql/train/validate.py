"""Validation during training: mean losses, frame-level occurrence accuracy and IoU of the top box.

- ``frame_accuracy``: over the frames before the query frame, (sigmoid(max anchor logit) > 0.5) == occurrence
  (the released code's ``prob_accuracy``, which picks its best checkpoint).
- ``top_box_iou``: over the frames that hold the target, IoU between the box of the highest-scoring anchor and
  the ground truth.
- ``frame_auroc``: threshold-free version of the accuracy: the area under the ROC curve of the frame scores
  (max anchor logit) against occurrence, over the frames before the query frame (0.5 = chance; NaN when
  only one class is present). A focal-loss model can rank frames well long before its scores cross 0.5.
- ``occurrence_rate``: fraction of evaluated frames that hold the target, so chance accuracy is
  max(rate, 1 - rate).

Sums are reduced over all processes, so every rank returns the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from prvql.boxes import box_iou
from prvql.distributed import all_gather_objects, all_reduce_sum
from prvql.model.head import top_boxes
from prvql.train.criterion import PRVQLCriterion


def frame_stats(
    logits: Tensor, boxes: Tensor, gt_boxes: Tensor, occurrence: Tensor, before_query: Tensor
) -> dict[str, Tensor]:
    """Counts for the frame metrics of one batch.

    Args:
        logits: [B, T, A]; boxes: [B, T, A, 4]; gt_boxes: [B, T, 4]; occurrence, before_query: [B, T] bool.

    Returns:
        ``correct``, ``frames``, ``occurring`` (over before-query frames), ``iou_sum``, ``positive_frames``
        (over frames with the target), each a 0-d float64 tensor.
    """
    scores, best = top_boxes(logits.float(), boxes.float())
    occurrence, before_query = occurrence.bool(), before_query.bool()
    predicted = torch.sigmoid(scores) > 0.5
    correct = ((predicted == occurrence) & before_query).sum()
    pred_pos, gt_pos = best[occurrence], gt_boxes.float()[occurrence]
    ious = box_iou(pred_pos, gt_pos).diagonal() if pred_pos.shape[0] else pred_pos.new_zeros(0)
    return {
        "correct": correct.double(),
        "frames": before_query.sum().double(),
        "occurring": (occurrence & before_query).sum().double(),
        "iou_sum": ious.sum().double(),
        "positive_frames": occurrence.sum().double(),
    }


def frame_auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve of ``scores`` [N] for boolean ``labels`` [N] (Mann-Whitney U / (n+ x n-))."""
    from scipy.stats import mannwhitneyu

    positives, negatives = scores[labels].double().numpy(), scores[~labels].double().numpy()
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    return float(mannwhitneyu(positives, negatives).statistic) / (len(positives) * len(negatives))


@torch.no_grad()
def validate(
    model: nn.Module,
    criterion: PRVQLCriterion,
    batches: Iterable,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Run ``model`` (put in eval mode; the caller restores its mode) over ``batches`` of ``prvql.data.Batch``.

    Returns:
        ``loss`` and every ``loss_*`` term (mean over batches), ``frame_accuracy``, ``top_box_iou``,
        ``frame_auroc``, ``occurrence_rate``, ``frames``, ``positive_frames``.
    """
    model.eval()
    keys = sorted([*criterion.weight_dict, "loss"])
    sums = {k: torch.zeros((), dtype=torch.float64, device=device) for k in keys}
    counts = {
        k: torch.zeros((), dtype=torch.float64, device=device)
        for k in ("batches", "correct", "frames", "occurring", "iou_sum", "positive_frames")
    }
    scores, labels = [], []
    for batch in batches:
        batch = batch.to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            outputs = model(batch.frames, batch.query)
        losses = criterion(outputs, batch)
        for key in keys:
            sums[key] += losses[key].double()
        stats = frame_stats(outputs["logits"], outputs["boxes"], batch.boxes, batch.occurrence, batch.before_query)
        for key, value in stats.items():
            counts[key] += value
        counts["batches"] += 1
        supervised = batch.before_query.bool()
        scores.append(outputs["logits"].float().amax(dim=-1)[supervised].cpu())
        labels.append(batch.occurrence.bool()[supervised].cpu())
    packed = all_reduce_sum(torch.stack([sums[k] for k in keys] + list(counts.values())))
    reduced = dict(zip(keys + list(counts), packed.tolist(), strict=True))
    n = max(reduced["batches"], 1.0)
    result = {k: reduced[k] / n for k in keys}
    result["frame_accuracy"] = reduced["correct"] / max(reduced["frames"], 1.0)
    result["top_box_iou"] = reduced["iou_sum"] / max(reduced["positive_frames"], 1.0)
    gathered = all_gather_objects(
        (
            torch.cat(scores) if scores else torch.zeros(0),
            torch.cat(labels) if labels else torch.zeros(0, dtype=torch.bool),
        )
    )
    result["frame_auroc"] = frame_auroc(torch.cat([g[0] for g in gathered]), torch.cat([g[1] for g in gathered]))
    result["occurrence_rate"] = reduced["occurring"] / max(reduced["frames"], 1.0)
    result["frames"] = reduced["frames"]
    result["positive_frames"] = reduced["positive_frames"]
    return result
