"""Anchor-to-target assignment for the anchor head's losses (the released code's rule; docs/MODEL.md).

An anchor of frame (b, t) is positive when the frame holds the target (occurrence) and the anchor's IoU with the
frame's ground-truth box exceeds a threshold. If no anchor of the whole batch passes, the ``topk`` anchors with the
highest IoU across the batch (still only on frames with a target) become positive. A batch without any target has
no positive anchor; the released code then forces the very first anchor positive, which we do not reproduce (it
would teach a false positive on a frame without the object).

Assignment uses the fixed anchors, not the predictions, and needs no gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from prvql.boxes import box_iou


@torch.no_grad()
def anchor_ious(anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """IoU of every anchor with the ground-truth box of every frame.

    Args:
        anchors: [A, 4] anchor boxes, normalised xyxy.
        gt_boxes: [B, T, 4] one box per frame, normalised xyxy (any value where the frame has no target).

    Returns:
        [B, T, A] IoUs.
    """
    b, t = gt_boxes.shape[:2]
    return box_iou(gt_boxes.reshape(b * t, 4).float(), anchors.float()).reshape(b, t, -1)


@torch.no_grad()
def assign_anchors(
    anchors: Tensor, gt_boxes: Tensor, occurrence: Tensor, iou_threshold: float = 0.2, topk: int = 5
) -> Tensor:
    """Positive-anchor mask.

    Args:
        anchors: [A, 4] anchor boxes, normalised xyxy.
        gt_boxes: [B, T, 4] ground-truth box per frame, normalised xyxy (ignored where ``occurrence`` is False).
        occurrence: [B, T] bool, True where the frame holds the target.
        iou_threshold: an anchor is positive when its IoU is strictly above this.
        topk: fallback size when no anchor of the batch passes the threshold.

    Returns:
        [B, T, A] bool, True for positive anchors (never on a frame without the target).
    """
    occurrence = occurrence.bool()
    ious = anchor_ious(anchors, gt_boxes)
    ious = torch.where(occurrence[..., None], ious, torch.full_like(ious, -1.0))
    positive = ious > iou_threshold
    # The fallback is computed every time and chosen on the device (no `if positive.any()`, which would wait for
    # the GPU): the topk highest IoUs of the batch, keeping only anchors of frames with the target (IoU >= 0; the
    # others hold -1), which is the top min(topk, anchors on target frames) -- none when no frame has the target.
    flat = ious.flatten()
    top = flat.topk(min(topk, flat.numel()))
    fallback = torch.zeros_like(flat, dtype=torch.bool).index_put_((top.indices,), top.values >= 0)
    return torch.where(positive.any(), positive, fallback.view_as(positive))
