"""Anchor assignment: threshold, top-k fallback across the batch, frames without a target, batched == per-sample."""

from __future__ import annotations

import torch

from prvql.train.assigner import anchor_ious, assign_anchors

ANCHORS = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])


def test_hand_made_threshold_case() -> None:
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]]])  # [1, 2, 4]
    occurrence = torch.tensor([[True, False]])
    positive = assign_anchors(ANCHORS, boxes, occurrence, iou_threshold=0.2, topk=5)
    # frame 0: IoU 1, 0, 0.25 -> anchors 0 and 2 positive; frame 1 has no target -> nothing.
    assert positive.tolist() == [[[True, False, True], [False, False, False]]]
    # strictly above: at threshold 0.25 the third anchor (IoU exactly 0.25) is negative
    positive = assign_anchors(ANCHORS, boxes, occurrence, iou_threshold=0.25, topk=5)
    assert positive.tolist() == [[[True, False, False], [False, False, False]]]


def test_fallback_takes_topk_across_the_whole_batch() -> None:
    boxes = torch.tensor(
        [
            [[0.90, 0.90, 0.92, 0.92], [0.0, 0.0, 0.02, 0.02]],  # clip 0: two tiny boxes
            [[0.10, 0.10, 0.20, 0.20], [0.0, 0.0, 0.0, 0.0]],  # clip 1: a box whose frame is marked absent
        ]
    )
    occurrence = torch.tensor([[True, True], [False, False]])
    ious = anchor_ious(ANCHORS, boxes)
    assert (ious[occurrence] < 0.2).all()
    positive = assign_anchors(ANCHORS, boxes, occurrence, iou_threshold=0.2, topk=2)
    # IoUs: clip0 frame0 = (0, 0.0016, 0.0004), clip0 frame1 = (0.0016, 0, 0.0004); clip 1 is excluded
    expected = torch.zeros(2, 2, 3, dtype=torch.bool)
    expected[0, 0, 1] = True
    expected[0, 1, 0] = True
    assert torch.equal(positive, expected)
    assert int(assign_anchors(ANCHORS, boxes, occurrence, iou_threshold=0.2, topk=3).sum()) == 3


def test_no_target_in_batch_gives_no_positive() -> None:
    boxes = torch.rand(2, 3, 4).sort(dim=-1).values
    positive = assign_anchors(ANCHORS, boxes, torch.zeros(2, 3, dtype=torch.bool), iou_threshold=0.2, topk=5)
    assert positive.shape == (2, 3, 3)
    assert not positive.any()


def test_batched_equals_per_sample() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.rand(3, 4, 2, generator=gen) * 0.6 + 0.2
    sizes = torch.rand(3, 4, 2, generator=gen) * 0.3 + 0.2
    boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=-1)
    occurrence = torch.rand(3, 4, generator=gen) > 0.3
    batched = assign_anchors(ANCHORS, boxes, occurrence)
    assert batched.any()
    for b in range(3):
        for t in range(4):
            one = assign_anchors(ANCHORS, boxes[b : b + 1, t : t + 1], occurrence[b : b + 1, t : t + 1])
            passes = bool((anchor_ious(ANCHORS, boxes[b : b + 1, t : t + 1]) > 0.2).any())
            if occurrence[b, t] and passes:  # no fallback on either side
                assert torch.equal(one[0, 0], batched[b, t])
            if not occurrence[b, t]:
                assert not batched[b, t].any()
