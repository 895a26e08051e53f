"""Model inputs: the ONLY preprocessing of frames and query crops, shared by training and inference.

- Frames: padded symmetrically to a square with one ``pad_value`` (in [0, 1] image units, before normalisation),
  resized with antialiasing to ``size x size``, ImageNet-normalised. Boxes follow via
  :func:`prvql.boxes.normalize_boxes` / :func:`prvql.boxes.denormalize_boxes`.
- Query: the visual-crop box grown to a square about its centre (:func:`prvql.boxes.square_box`, clipped to the
  frame), cropped and resized directly to ``size x size`` (no padding), ImageNet-normalised.

The content is resized before padding (cheap on large frames); the integer placement differs from the exact
geometry of ``normalize_boxes`` by at most one output pixel.

``released=True`` (``data.released_preprocessing``, set by the presets ``prvql convert`` picks for the authors'
checkpoints) reproduces the released inference code instead: frames are padded at full resolution by
``(long - short) // 2`` on both sides of the short side, then resized bilinearly *without* antialiasing; the query
box is squared and clipped to ``[0, H-1] x [0, W-1]`` as released, cropped with PIL (rounded corners) and resized
with PIL's default bicubic filter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from prvql.boxes import square_box

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Frames = np.ndarray | Tensor


def to_tensor_nchw(frames: Frames) -> Tensor:
    """uint8 [N, H, W, 3] (numpy or torch) -> uint8 [N, 3, H, W] view (channels-last memory, no copy)."""
    x = torch.from_numpy(np.asarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames [N, H, W, 3], got {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2)


def _resize(x: Tensor, height: int, width: int) -> Tensor:
    """Antialiased bilinear resize of [N, 3, H, W] -> float [N, 3, height, width] in [0, 1]."""
    if x.dtype == torch.uint8 and x.device.type == "cpu":
        out = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        return out.float().div_(255)
    x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
    return F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)


def normalize_image(x: Tensor) -> Tensor:
    """ImageNet normalisation of [..., 3, H, W] float images in [0, 1]."""
    mean = x.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def pad_resize(frames: Frames, size: int, pad_value: float) -> Tensor:
    """Frames to the model's square input, before normalisation.

    Args:
        frames: uint8 [N, H, W, 3] (numpy or torch, any device).
        size: side S of the square output.
        pad_value: value of the padding band, in [0, 1] image units.

    Returns:
        float [N, 3, S, S] in [0, 1]; the frame sits centred, its long side spanning S pixels.
    """
    x = to_tensor_nchw(frames)
    n, _, height, width = x.shape
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = _resize(x, new_h, new_w)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out = resized.new_full((n, 3, size, size), pad_value)
    out[:, :, top : top + new_h, left : left + new_w] = resized
    return out


def pad_resize_released(frames: Frames, size: int, pad_value: float) -> Tensor:
    """The released code's frames: pad ``(long - short) // 2`` on both sides of the short side with ``pad_value``,
    then bilinear resize (no antialias) to ``S x S``. uint8 [N, H, W, 3] -> float [N, 3, S, S] in [0, 1]."""
    x = to_tensor_nchw(frames).float().div(255)
    height, width = x.shape[-2:]
    band = abs(height - width) // 2
    pad = (0, 0, band, band) if height < width else (band, band, 0, 0)
    x = F.pad(x, pad, value=pad_value)
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=False, align_corners=False)


def prepare_frames(frames: Frames, size: int, pad_value: float, released: bool = False) -> Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, S, S]: pad to a square with ``pad_value``, resize, ImageNet-normalise
    (``released``: :func:`pad_resize_released`)."""
    return normalize_image((pad_resize_released if released else pad_resize)(frames, size, pad_value))


def query_crop_box(box_xyxy: Sequence[float] | Tensor, height: int, width: int) -> tuple[int, int, int, int]:
    """Integer pixel crop (x1, y1, x2, y2) of the squared, clipped visual-crop box; at least 1 pixel each way."""
    box = torch.as_tensor(box_xyxy, dtype=torch.float64).reshape(4)
    x1, y1, x2, y2 = square_box(box, height, width).tolist()
    x1, y1 = min(int(math.floor(x1)), width - 1), min(int(math.floor(y1)), height - 1)
    x2, y2 = max(int(math.ceil(x2)), x1 + 1), max(int(math.ceil(y2)), y1 + 1)
    return x1, y1, min(x2, width), min(y2, height)


def released_query_box(box_xyxy: Sequence[float] | Tensor, height: int, width: int) -> tuple[float, ...]:
    """The released code's square query box: side ``2 * max(h, w) / 2`` about the centre, clipped to
    ``[0, W-1] x [0, H-1]`` (float pixels, xyxy)."""
    x1, y1, x2, y2 = (float(v) for v in torch.as_tensor(box_xyxy, dtype=torch.float64).reshape(4))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    r = max(cx - x1, cy - y1)
    return max(cx - r, 0.0), max(cy - r, 0.0), min(cx + r, width - 1.0), min(cy + r, height - 1.0)


def query_image(frame: Frames, box_xyxy: Sequence[float] | Tensor, size: int, released: bool = False) -> Tensor:
    """The query image from its frame, before normalisation (what ``data.query_augment`` works on).

    Args:
        frame: uint8 [H, W, 3] (numpy or torch).
        box_xyxy: visual-crop box in pixels of ``frame``.
        size: side S of the output.
        released: crop and resize as the released code does (PIL, see the module docstring).

    Returns:
        float [3, S, S] in [0, 1]: the squared box's content resized directly (antialiased) to S x S.
    """
    if released:
        from PIL import Image

        image = Image.fromarray(np.ascontiguousarray(np.asarray(frame.cpu() if isinstance(frame, Tensor) else frame)))
        crop = image.crop(released_query_box(box_xyxy, image.height, image.width)).resize((size, size))
        return torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1)
    x = to_tensor_nchw(frame[None] if isinstance(frame, np.ndarray) else frame.unsqueeze(0))
    x1, y1, x2, y2 = query_crop_box(box_xyxy, x.shape[2], x.shape[3])
    return _resize(x[:, :, y1:y2, x1:x2], size, size)[0]


def prepare_query(frame: Frames, box_xyxy: Sequence[float] | Tensor, size: int, released: bool = False) -> Tensor:
    """The query image from its frame, ImageNet-normalised: float [3, S, S] (:func:`query_image`, normalised)."""
    return normalize_image(query_image(frame, box_xyxy, size, released))
