"""Anchor grid: count, order, centres on the grid, sizes and ratios."""

from __future__ import annotations

import math

import torch

from prvql.boxes import xyxy_to_cxcywh
from prvql.model.anchors import make_anchors


def test_paper_configuration_has_3072_anchors():
    anchors = make_anchors(448, 16, (16, 32, 64, 128), (0.5, 1.0, 2.0))
    assert anchors.shape == (3072, 4)
    assert anchors.dtype == torch.float32


def test_order_centres_sizes_and_ratios():
    size, grid, sizes, ratios = 112.0, 4, (16.0, 32.0, 64.0), (0.5, 1.0, 2.0)
    anchors = make_anchors(size, grid, sizes, ratios)
    assert anchors.shape == (grid * grid * len(sizes) * len(ratios), 4)
    cx, cy, w, h = (xyxy_to_cxcywh(anchors.double()) * size).unbind(-1)
    stride = size / grid
    for row in range(grid):
        for col in range(grid):
            for s_index, s in enumerate(sizes):
                for r_index, r in enumerate(ratios):
                    i = ((row * grid + col) * len(sizes) + s_index) * len(ratios) + r_index
                    assert math.isclose(cx[i], (col + 0.5) * stride, abs_tol=1e-4)
                    assert math.isclose(cy[i], (row + 0.5) * stride, abs_tol=1e-4)
                    assert math.isclose(w[i] * h[i], s * s, rel_tol=1e-5)
                    assert math.isclose(h[i] / w[i], r, rel_tol=1e-5)


def test_known_anchor_value():
    anchors = make_anchors(448, 16, (16, 32, 64, 128), (0.5, 1.0, 2.0))
    # row 0, col 1, size 32, ratio 1: centre (42, 14), 32 x 32
    expected = torch.tensor([42 - 16, 14 - 16, 42 + 16, 14 + 16]) / 448
    torch.testing.assert_close(anchors[(0 * 16 + 1) * 12 + 1 * 3 + 1], expected)
    assert bool((anchors[:, 2] > anchors[:, 0]).all() and (anchors[:, 3] > anchors[:, 1]).all())
