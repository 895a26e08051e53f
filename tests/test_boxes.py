"""Box conversions: the only place pixels meet the model's normalised padded square."""

from __future__ import annotations

import torch

from prvql.boxes import (
    cxcywh_to_xyxy,
    denormalize_boxes,
    normalize_boxes,
    pad_to_square_offsets,
    square_box,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
)


def test_xywh_and_centre_forms():
    xyxy = xywh_to_xyxy(torch.tensor([[10.0, 20.0, 30.0, 40.0]]))
    assert xyxy.tolist() == [[10.0, 20.0, 40.0, 60.0]]
    assert xyxy_to_cxcywh(xyxy).tolist() == [[25.0, 40.0, 30.0, 40.0]]
    assert torch.equal(cxcywh_to_xyxy(xyxy_to_cxcywh(xyxy)), xyxy)


def test_normalisation_pads_the_short_side_symmetrically():
    # 200 wide x 100 high: the square is 200, padded 50 px above and below.
    assert pad_to_square_offsets(100, 200) == (200.0, 0.0, 50.0)
    box = torch.tensor([0.0, 0.0, 200.0, 100.0])  # the whole frame
    assert normalize_boxes(box, 100, 200).tolist() == [0.0, 0.25, 1.0, 0.75]
    tall = torch.tensor([10.0, 30.0, 50.0, 90.0])
    back = denormalize_boxes(normalize_boxes(tall, 120, 60), 120, 60)
    assert torch.allclose(back, tall)


def test_denormalise_clips_to_the_frame():
    # A box reaching into the padding band comes back clipped to the image.
    out = denormalize_boxes(torch.tensor([[-0.1, 0.0, 1.2, 1.0]]), 100, 200)
    assert out.tolist() == [[0.0, 0.0, 200.0, 100.0]]


def test_square_box_grows_about_the_centre_and_clips():
    sq = square_box(torch.tensor([40.0, 45.0, 60.0, 55.0]), 100, 100)
    assert sq.tolist() == [40.0, 40.0, 60.0, 60.0]
    edge = square_box(torch.tensor([0.0, 10.0, 10.0, 50.0]), 100, 100)
    assert edge.tolist() == [0.0, 10.0, 25.0, 50.0]  # clipped at the left border: not square there
