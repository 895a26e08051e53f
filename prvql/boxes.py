"""Every box conversion of the project lives here.

Conventions:
- At every boundary (annotations, predictions JSON, metrics, visualisation) boxes are ``xyxy`` =
  (x1, y1, x2, y2) in pixels of the original frame, x to the right and y down.
- Inside the model, the assigner and the criterion, boxes are ``xyxy`` normalised to [0, 1] of the model input,
  which is the original frame padded symmetrically to a square (short side padded on both sides) and resized.
- Ego4D annotations give (x, y, width, height); :func:`xywh_to_xyxy` is the way in. The one exception is the
  annotation reader (``prvql/data/annotations.py``), which adds width and height to plain numbers as it parses:
  it stays free of torch so that ``prvql evaluate`` starts in a fraction of a second.
- Centre/size form exists only inside the anchor head's decoding and the L1 loss: :func:`xyxy_to_cxcywh`.

IoU and GIoU come from ``torchvision.ops`` (re-exported here so callers import one module).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou, generalized_box_iou

__all__ = [
    "box_iou",
    "generalized_box_iou",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "cxcywh_to_xyxy",
    "sorted_corners",
    "pad_to_square_offsets",
    "normalize_boxes",
    "denormalize_boxes",
    "square_box",
    "clip_boxes",
    "rescale_boxes",
]


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """[..., 4] (x, y, w, h) -> [..., 4] (x1, y1, x2, y2)."""
    return box_convert(boxes, "xywh", "xyxy")


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """[..., 4] (x1, y1, x2, y2) -> [..., 4] (cx, cy, w, h)."""
    return box_convert(boxes, "xyxy", "cxcywh")


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """[..., 4] (cx, cy, w, h) -> [..., 4] (x1, y1, x2, y2)."""
    return box_convert(boxes, "cxcywh", "xyxy")


def sorted_corners(boxes: Tensor) -> Tensor:
    """[..., 4] xyxy whose corners may be swapped (x2 < x1 or y2 < y1) -> valid xyxy (x1 <= x2, y1 <= y2)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([torch.minimum(x1, x2), torch.minimum(y1, y2), torch.maximum(x1, x2), torch.maximum(y1, y2)], -1)


def pad_to_square_offsets(height: int, width: int) -> tuple[float, float, float]:
    """Geometry of the symmetric pad-to-square: returns (side, pad_left, pad_top) in pixels.

    The square has side ``max(height, width)``; the image sits centred in it.
    """
    side = float(max(height, width))
    return side, (side - width) / 2.0, (side - height) / 2.0


def normalize_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Pixel xyxy in an ``height x width`` frame -> xyxy in [0, 1] of the padded square model input. [..., 4]."""
    side, left, top = pad_to_square_offsets(height, width)
    offset = boxes.new_tensor([left, top, left, top])
    return (boxes + offset) / side


def denormalize_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Normalised xyxy of the padded square -> pixel xyxy in the ``height x width`` frame, clipped to it. [..., 4]."""
    side, left, top = pad_to_square_offsets(height, width)
    offset = boxes.new_tensor([left, top, left, top])
    return clip_boxes(boxes * side - offset, height, width)


def clip_boxes(boxes: Tensor, height: float, width: float) -> Tensor:
    """Clamp xyxy boxes [..., 4] to [0, width] x [0, height] (works for any leading shape).

    The limits stay Python numbers: no tensor is copied from the host, so boxes on a GPU cost no synchronisation.
    """
    x = boxes[..., 0::2].clamp(0, width)  # (x1, x2)
    y = boxes[..., 1::2].clamp(0, height)  # (y1, y2)
    return torch.stack((x, y), dim=-1).flatten(-2)


def square_box(boxes: Tensor, height: int, width: int) -> Tensor:
    """Grow each xyxy box to a square of side max(w, h) about its centre, then clip to the frame. [..., 4].

    This is how the released code makes the query crop (``query_square``): at the borders the result is
    not exactly square.
    """
    cx, cy, w, h = xyxy_to_cxcywh(boxes).unbind(-1)
    half = torch.maximum(w, h) / 2
    out = torch.stack([cx - half, cy - half, cx + half, cy + half], dim=-1)
    return clip_boxes(out, height, width)


def rescale_boxes(boxes: Tensor, src_hw: tuple[float, float], dst_hw: tuple[float, float]) -> Tensor:
    """Pixel xyxy boxes [..., 4] of a ``src_hw`` (height, width) frame -> the same boxes in a resized ``dst_hw`` frame.

    Ego4D boxes refer to ``original_height x original_width``; extracted clips and cached frames may be smaller.
    """
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    return boxes * boxes.new_tensor([sx, sy, sx, sy])
