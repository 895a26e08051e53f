"""Anchor boxes on the head's grid (a pure function; the model keeps the result as a buffer)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from prvql.boxes import cxcywh_to_xyxy


def make_anchors(input_size: float, grid_size: int, sizes: Sequence[float], ratios: Sequence[float]) -> Tensor:
    """Anchors of every grid cell, size and aspect ratio, in normalised xyxy.

    The ``input_size`` square is cut into ``grid_size x grid_size`` cells of ``stride = input_size / grid_size``
    pixels; anchor centres sit at ``(i + 0.5) * stride``. An anchor of size ``s`` (pixels) and ratio ``r = h / w``
    has area ``s^2``: ``w = sqrt(s^2 / r)``, ``h = r * w``.

    Args:
        input_size: side of the square model input, pixels.
        grid_size: G, cells per side.
        sizes: anchor sizes in pixels.
        ratios: aspect ratios h / w.

    Returns:
        ``[A, 4]`` with ``A = G*G*len(sizes)*len(ratios)``, ordered
        ``((row * G + col) * len(sizes) + size) * len(ratios) + ratio``, coordinates divided by ``input_size``.
    """
    stride = input_size / grid_size
    centres = (torch.arange(grid_size, dtype=torch.float64) + 0.5) * stride
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")  # row index outer
    size = torch.tensor(sizes, dtype=torch.float64)[:, None]
    ratio = torch.tensor(ratios, dtype=torch.float64)[None, :]
    w = torch.sqrt(size**2 / ratio)
    h = ratio * w  # [S, R]
    shape = (grid_size, grid_size, len(sizes), len(ratios))
    boxes = torch.stack(
        [cx[:, :, None, None].expand(shape), cy[:, :, None, None].expand(shape), w.expand(shape), h.expand(shape)],
        dim=-1,
    )
    return (cxcywh_to_xyxy(boxes.reshape(-1, 4)) / input_size).float()
