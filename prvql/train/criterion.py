"""Training losses of PRVQL, per stage (the released code's terms; how they differ from the paper: docs/MODEL.md).

For every stage k (0 = first) the criterion returns unweighted terms, each a scalar:

- ``loss_prob_s{k}``: sigmoid focal loss over all anchors of the frames before the query frame, target = the
  positive-anchor mask of :func:`prvql.train.assigner.assign_anchors`, mean over those anchors.
- ``loss_center_s{k}``: L1 between predicted and ground-truth box centres, mean over positive anchors x 2.
- ``loss_size_s{k}``: L1 between the predicted *signed* half widths / half heights ((x2 - x1) / 2, (y2 - y1) / 2 of
  the decoded box, before any re-sorting) and the ground-truth ones (the released code's convention, so its weight
  1.0 carries over), mean over positive anchors x 2. Signed, so that a mirrored box (x2 < x1) is pulled back through
  zero width; an L1 on |w| / 2 would push it further out.
- ``loss_giou_s{k}``: mean over positive anchors of 1 - GIoU.
- ``loss_frame_bce_s{k}`` (only when its weight is not 0): the paper's frame-level BCE between each frame's max
  anchor logit and the occurrence label, mean over the frames before the query frame.

``loss`` = sum over keys of ``weight_dict[key] * value``: the only place where term weights and stage weights
are applied. Predicted corners are re-sorted before the GIoU term only (the head adds raw offsets to the anchors, so
a predicted box can come out flipped), as the released code does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from prvql.boxes import sorted_corners, xyxy_to_cxcywh
from prvql.config import LossConfig
from prvql.errors import ConfigError
from prvql.train.assigner import assign_anchors

TERMS = ("prob", "center", "size", "giou", "frame_bce")


class LossTargets(Protocol):
    """What the criterion reads from a batch (``prvql.data.Batch`` satisfies it)."""

    boxes: Tensor  # [B, T, 4] normalised xyxy, anything where a frame has no target
    occurrence: Tensor  # [B, T] bool
    before_query: Tensor  # [B, T] bool


@dataclass
class Targets:
    """Plain targets, e.g. the hard-negative pairs of :func:`prvql.train.loop.hard_negative_targets`."""

    boxes: Tensor
    occurrence: Tensor
    before_query: Tensor


def stage_weights(scheme: str, num_stages: int) -> tuple[float, ...]:
    """Weight of each stage's loss, first stage first.

    Args:
        scheme: ``"released"``: 2^(K-1-k) / K, i.e. (4, 2, 1) / 3 for K = 3 -- the released code gives the FIRST
            stage the largest weight; ``"sum"``: 1 for every stage (the paper's plain sum); or K comma-separated
            numbers used as given, e.g. ``"1,1,2"``.
        num_stages: K.
    """
    if scheme == "released":
        return tuple(2.0 ** (num_stages - 1 - k) / num_stages for k in range(num_stages))
    if scheme == "sum":
        return (1.0,) * num_stages
    try:
        values = tuple(float(v) for v in scheme.split(","))
    except ValueError:
        values = ()
    if len(values) != num_stages:
        raise ConfigError(
            f"loss.stage_weights: expected 'released', 'sum' or {num_stages} comma-separated numbers, got {scheme!r}"
        )
    return values


def _zero(like: Tensor) -> Tensor:
    """A zero that keeps ``like`` in the graph (DDP needs every output used)."""
    return like.sum() * 0.0


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` is True (same shapes); 0, still in the graph, when the mask is empty."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)


def box_losses(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """L1 centre, L1 signed half-size and GIoU losses of matched boxes.

    Args:
        pred: [P, 4] predicted normalised xyxy (corners may be swapped).
        gt: [P, 4] ground-truth normalised xyxy.

    Returns:
        (center, size, giou) scalars; zeros (still attached to ``pred``) when P = 0.
    """
    if pred.shape[0] == 0:
        return _zero(pred), _zero(pred), _zero(pred)
    pred_c, gt_c = xyxy_to_cxcywh(pred), xyxy_to_cxcywh(gt)  # signed w, h: a mirrored box has w < 0
    center = F.l1_loss(pred_c[:, :2], gt_c[:, :2])
    size = F.l1_loss(pred_c[:, 2:] / 2, gt_c[:, 2:] / 2)
    giou = generalized_box_iou_loss(sorted_corners(pred), gt, reduction="mean")
    return center, size, giou


class PRVQLCriterion:
    """Per-stage anchor losses and their weighted total.

    Args:
        stage_weights: one weight per stage, first stage first (see :func:`stage_weights`).
        weight_prob, weight_center, weight_size, weight_giou, weight_frame_bce: term weights.
        positive_iou: IoU above which an anchor is positive.
        positive_topk: fallback number of positives when none passes ``positive_iou`` in the batch.
        focal_alpha: focal-loss weight of positive anchors (torchvision's ``alpha``; the released code's 0.75).
        focal_gamma: focal-loss focusing exponent.
    """

    def __init__(
        self,
        *,
        stage_weights: Sequence[float],
        weight_prob: float = 100.0,
        weight_center: float = 1.0,
        weight_size: float = 1.0,
        weight_giou: float = 0.3,
        weight_frame_bce: float = 0.0,
        positive_iou: float = 0.2,
        positive_topk: int = 5,
        focal_alpha: float = 0.75,
        focal_gamma: float = 2.0,
    ) -> None:
        self.num_stages = len(stage_weights)
        self.positive_iou = positive_iou
        self.positive_topk = positive_topk
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.use_frame_bce = weight_frame_bce != 0.0
        term_weights = {
            "prob": weight_prob,
            "center": weight_center,
            "size": weight_size,
            "giou": weight_giou,
            "frame_bce": weight_frame_bce,
        }
        self.weight_dict = {
            f"loss_{term}_s{k}": term_weights[term] * w
            for k, w in enumerate(stage_weights)
            for term in TERMS
            if term != "frame_bce" or self.use_frame_bce
        }

    def stage_losses(
        self, logits: Tensor, boxes: Tensor, positive: Tensor, where: tuple[Tensor, ...], targets: LossTargets
    ) -> dict[str, Tensor]:
        """Unweighted terms of one stage.

        The frames before the query frame are selected by masking, not indexing, so that no term waits for the GPU;
        the positive anchors (a data-dependent number) are indexed with ``where``, found once for every stage.

        Args:
            logits: [B, T, A] anchor logits.
            boxes: [B, T, A, 4] decoded boxes, normalised xyxy.
            positive: [B, T, A] bool positive anchors.
            where: ``positive.nonzero(as_tuple=True)``: three [P] index tensors.
            targets: boxes [B, T, 4], occurrence [B, T], before_query [B, T].

        Returns:
            {"prob", "center", "size", "giou"[, "frame_bce"]} -> scalar.
        """
        logits, boxes = logits.float(), boxes.float()
        supervised = targets.before_query.bool()
        focal = sigmoid_focal_loss(
            logits, positive.float(), alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="none"
        )
        prob = _masked_mean(focal, supervised[..., None].expand_as(focal))
        gt = targets.boxes.float()[where[0], where[1]]
        center, size, giou = box_losses(boxes[where], gt)
        out = {"prob": prob, "center": center, "size": size, "giou": giou}
        if self.use_frame_bce:
            frame_bce = F.binary_cross_entropy_with_logits(
                logits.amax(dim=-1), targets.occurrence.float(), reduction="none"
            )
            out["frame_bce"] = _masked_mean(frame_bce, supervised)
        return out

    def __call__(self, outputs: dict, targets: LossTargets) -> dict[str, Tensor]:
        """All terms of all stages plus the weighted total.

        Args:
            outputs: the model's dict: ``anchors`` [A, 4] and ``stages`` (K dicts with ``logits`` [B, T, A] and
                ``boxes`` [B, T, A, 4]).
            targets: boxes [B, T, 4] normalised xyxy, occurrence [B, T] bool, before_query [B, T] bool.

        Returns:
            ``loss_{term}_s{k}`` for every term and stage, and ``loss`` (the weighted sum).
        """
        stages = outputs["stages"]
        if len(stages) != self.num_stages:
            raise ValueError(f"criterion built for {self.num_stages} stages, the model returned {len(stages)}")
        positive = assign_anchors(
            outputs["anchors"], targets.boxes, targets.occurrence, self.positive_iou, self.positive_topk
        )
        where = positive.nonzero(as_tuple=True)  # the step's one wait for the GPU: P sizes the box terms
        losses: dict[str, Tensor] = {}
        for k, stage in enumerate(stages):
            for term, value in self.stage_losses(stage["logits"], stage["boxes"], positive, where, targets).items():
                losses[f"loss_{term}_s{k}"] = value
        losses["loss"] = sum(self.weight_dict[key] * losses[key] for key in self.weight_dict)
        return losses


def build_criterion(cfg: LossConfig, num_stages: int) -> PRVQLCriterion:
    """The criterion for ``cfg`` (the only reader of ``cfg.loss``) and a model with ``num_stages`` stages."""
    return PRVQLCriterion(
        stage_weights=stage_weights(cfg.stage_weights, num_stages),
        weight_prob=cfg.weight_prob,
        weight_center=cfg.weight_center,
        weight_size=cfg.weight_size,
        weight_giou=cfg.weight_giou,
        weight_frame_bce=cfg.weight_frame_bce,
        positive_iou=cfg.positive_iou,
        positive_topk=cfg.positive_topk,
        focal_alpha=cfg.focal_alpha,
        focal_gamma=cfg.focal_gamma,
    )
