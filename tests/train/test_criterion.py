"""Criterion: focal, L1 and GIoU terms against hand-computed values; keys per stage; weights applied once."""

from __future__ import annotations

import math

import pytest
import torch

from prvql.config import LossConfig
from prvql.errors import ConfigError
from prvql.train.criterion import PRVQLCriterion, Targets, box_losses, build_criterion, stage_weights

ANCHORS = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])


def _targets(before_query: list[bool] | None = None) -> Targets:
    """One clip, two frames: frame 0 holds the target at anchor 0, frame 1 is empty."""
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]])
    occurrence = torch.tensor([[True, False]])
    bq = torch.tensor([before_query or [True, True]])
    return Targets(boxes=boxes, occurrence=occurrence, before_query=bq)


def _outputs(num_stages: int, logits: torch.Tensor | None = None, boxes: torch.Tensor | None = None) -> dict:
    logits = torch.zeros(1, 2, 2) if logits is None else logits
    boxes = ANCHORS.expand(1, 2, 2, 4).clone() if boxes is None else boxes
    stages = [
        {"logits": logits.clone().requires_grad_(), "boxes": boxes.clone().requires_grad_()} for _ in range(num_stages)
    ]
    return {"anchors": ANCHORS, "stages": stages, "logits": stages[-1]["logits"], "boxes": stages[-1]["boxes"]}


def test_focal_term_hand_computed() -> None:
    crit = PRVQLCriterion(stage_weights=[1.0])
    losses = crit(_outputs(1), _targets())
    # logits 0 -> p = 0.5; 1 positive (alpha 0.75) and 3 negatives (0.25), each (1 - p_t)^2 * ln 2
    expected = (0.75 + 3 * 0.25) * 0.25 * math.log(2) / 4
    assert losses["loss_prob_s0"].item() == pytest.approx(expected, rel=1e-6)
    # only before-query frames count: dropping frame 1 leaves one positive and one negative
    losses = crit(_outputs(1), _targets(before_query=[True, False]))
    assert losses["loss_prob_s0"].item() == pytest.approx((0.75 + 0.25) * 0.25 * math.log(2) / 2, rel=1e-6)


def test_box_terms_hand_computed() -> None:
    pred = torch.tensor([[0.1, 0.1, 0.5, 0.5]])
    gt = torch.tensor([[0.2, 0.2, 0.6, 0.4]])
    center, size, giou = box_losses(pred, gt)
    # centres (0.3, 0.3) vs (0.4, 0.3); half sizes (0.2, 0.2) vs (0.2, 0.1)
    assert center.item() == pytest.approx(0.05, abs=1e-6)
    assert size.item() == pytest.approx(0.05, abs=1e-6)
    # intersection 0.06, union 0.18, enclosure 0.2 -> GIoU = 1/3 - 0.02/0.2
    assert giou.item() == pytest.approx(1 - (1 / 3 - 0.1), abs=1e-5)
    # a mirrored box has the same centre and GIoU but negative half sizes (-0.2, -0.2) vs (0.2, 0.1): signed L1
    flipped = box_losses(pred[:, [2, 3, 0, 1]], gt)
    assert flipped[0].item() == pytest.approx(center.item(), abs=1e-6)
    assert flipped[2].item() == pytest.approx(giou.item(), abs=1e-6)
    assert flipped[1].item() == pytest.approx((0.4 + 0.3) / 2, abs=1e-6)


@pytest.mark.parametrize("axis", [0, 1])
def test_size_loss_pulls_a_mirrored_box_back(axis: int) -> None:
    """w = -0.02 (x2 < x1): the size gradient must widen the box towards x1 <= x2, not mirror it further."""
    gt = torch.tensor([[0.4, 0.4, 0.5, 0.5]])
    pred = torch.tensor([[0.46, 0.44, 0.44, 0.46]]) if axis == 0 else torch.tensor([[0.44, 0.46, 0.46, 0.44]])
    pred.requires_grad_()
    _, size, _ = box_losses(pred, gt)
    size.backward()
    lo, hi = pred.grad[0, axis], pred.grad[0, axis + 2]
    # gradient descent moves a coordinate against its gradient: the low corner must go down, the high one up
    assert lo > 0 and hi < 0
    # and a few plain gradient steps on the size term alone un-mirror it
    box = pred.detach().clone().requires_grad_()
    for _ in range(20):
        box.grad = None
        box_losses(box, gt)[1].backward()
        with torch.no_grad():
            box -= 0.01 * box.grad / box.grad.abs().max()
    assert box[0, axis + 2] > box[0, axis]


def test_box_terms_in_the_criterion_use_positive_anchors_only() -> None:
    boxes = ANCHORS.expand(1, 2, 2, 4).clone()
    boxes[0, 0, 0] = torch.tensor([0.1, 0.1, 0.5, 0.5])  # the positive anchor's prediction
    boxes[0, 1] = torch.tensor([0.3, 0.3, 0.9, 0.7])  # a frame without the target: must not matter
    targets = _targets()
    targets.boxes[0, 0] = torch.tensor([0.2, 0.2, 0.6, 0.4])  # IoU with anchor 0 = 0.06 / 0.27 > 0.2
    losses = PRVQLCriterion(stage_weights=[1.0])(_outputs(1, boxes=boxes), targets)
    assert losses["loss_center_s0"].item() == pytest.approx(0.05, abs=1e-6)
    assert losses["loss_size_s0"].item() == pytest.approx(0.05, abs=1e-6)
    assert losses["loss_giou_s0"].item() == pytest.approx(1 - (1 / 3 - 0.1), abs=1e-5)


def test_perfect_boxes_give_zero_box_losses() -> None:
    losses = PRVQLCriterion(stage_weights=[1.0])(_outputs(1), _targets())
    for term in ("center", "size", "giou"):
        assert losses[f"loss_{term}_s0"].item() == pytest.approx(0.0, abs=1e-6)


def test_keys_and_weights_applied_once() -> None:
    crit = build_criterion(LossConfig(), num_stages=3)
    logits = torch.randn(1, 2, 2)
    boxes = ANCHORS.expand(1, 2, 2, 4) + 0.05 * torch.randn(1, 2, 2, 4)
    losses = crit(_outputs(3, logits, boxes), _targets())
    expected_keys = {f"loss_{t}_s{k}" for t in ("prob", "center", "size", "giou") for k in range(3)} | {"loss"}
    assert set(losses) == expected_keys
    assert crit.weight_dict["loss_prob_s0"] == pytest.approx(100 * 4 / 3)
    assert crit.weight_dict["loss_giou_s2"] == pytest.approx(0.3 * 1 / 3)
    total = sum(crit.weight_dict[k] * losses[k] for k in crit.weight_dict)
    assert losses["loss"].item() == pytest.approx(total.item(), rel=1e-6)
    losses["loss"].backward()


def test_stage_weight_schemes() -> None:
    assert stage_weights("released", 3) == pytest.approx((4 / 3, 2 / 3, 1 / 3))
    assert stage_weights("released", 2) == pytest.approx((1.0, 0.5))
    assert stage_weights("sum", 3) == (1.0, 1.0, 1.0)
    assert stage_weights("1,2", 2) == (1.0, 2.0)
    with pytest.raises(ConfigError, match="loss.stage_weights"):
        stage_weights("1,2", 3)


def test_frame_bce_hand_computed() -> None:
    crit = build_criterion(LossConfig(weight_frame_bce=2.0), num_stages=1)
    logits = torch.tensor([[[1.0, -3.0], [-2.0, 0.5]]])  # frame maxima 1.0 (target 1) and 0.5 (target 0)
    losses = crit(_outputs(1, logits=logits), _targets())
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 2
    assert losses["loss_frame_bce_s0"].item() == pytest.approx(expected, rel=1e-6)
    assert crit.weight_dict["loss_frame_bce_s0"] == 2.0


def test_batch_without_targets_is_finite_and_keeps_the_graph() -> None:
    targets = Targets(
        boxes=torch.zeros(1, 2, 4),
        occurrence=torch.zeros(1, 2, dtype=torch.bool),
        before_query=torch.ones(1, 2, dtype=torch.bool),
    )
    outputs = _outputs(2, logits=torch.randn(1, 2, 2))
    losses = build_criterion(LossConfig(), num_stages=2)(outputs, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_giou_s0"].item() == 0.0
    losses["loss"].backward()
    assert outputs["stages"][0]["boxes"].grad is not None
    assert outputs["stages"][0]["logits"].grad.abs().sum() > 0
