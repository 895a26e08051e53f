"""Anchor head (prediction head of every stage) and box decoding, paper Eq. (6)-(7) and B = dB + B_anchor."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prvql.boxes import cxcywh_to_xyxy, sorted_corners, xyxy_to_cxcywh
from prvql.model.layers import ConvBNAct


class AnchorHead(nn.Module):
    """Per-anchor box offsets and occurrence logits from a stage's features.

    Upsample (``upsample_steps`` transposed convs k4 s2 p1), ConvBNAct ``dim -> 2*dim``, split into a regression
    half and a classification half; each: Dropout -> ``num_convs`` x ConvBNAct -> conv3x3 output
    (``m*4`` offsets / ``m`` logits, weights and biases drawn from N(0, 1e-6)).

    Args:
        dim: input width.
        anchors_per_cell: m = len(sizes) * len(ratios).
        upsample_steps: transposed convs (each doubles the grid).
        num_convs: ConvBNAct layers per half.
        dropout: dropout at the start of each half.
    """

    def __init__(self, dim: int, anchors_per_cell: int, upsample_steps: int, num_convs: int, dropout: float) -> None:
        super().__init__()
        self.anchors_per_cell = anchors_per_cell
        self.upsample = nn.Sequential(
            *(nn.ConvTranspose2d(dim, dim, 4, stride=2, padding=1) for _ in range(upsample_steps))
        )
        self.in_conv = ConvBNAct(dim, 2 * dim)
        self.reg_convs = nn.Sequential(nn.Dropout(dropout), *(ConvBNAct(dim, dim) for _ in range(num_convs)))
        self.cls_convs = nn.Sequential(nn.Dropout(dropout), *(ConvBNAct(dim, dim) for _ in range(num_convs)))
        self.reg_out = nn.Conv2d(dim, anchors_per_cell * 4, 3, padding=1)
        self.cls_out = nn.Conv2d(dim, anchors_per_cell, 3, padding=1)
        for conv in (self.reg_out, self.cls_out):
            nn.init.normal_(conv.weight, std=1e-6)
            nn.init.normal_(conv.bias, std=1e-6)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Predict offsets and logits.

        Args:
            x: ``[N, D, h, w]``.

        Returns:
            offsets ``[N, A, 4]`` (cx, cy, w, h, normalised units) and logits ``[N, A]``, with ``A = G*G*m`` in
            the order of :func:`prvql.model.anchors.make_anchors` (G = h * 2^upsample_steps).
        """
        reg, cls = self.trunk(x)
        return self.regress(reg), self.classify(cls)

    def trunk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The shared part: ``[N, D, h, w]`` -> regression and classification features, ``[N, D, G, G]`` each."""
        reg, cls = self.in_conv(self.upsample(x)).chunk(2, dim=1)
        return reg, cls

    def classification_trunk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`trunk` without its regression half (eval mode): ``[N, D, h, w]`` -> the upsampled features and
        the classification features, ``[N, D, G, G]`` each; :meth:`regression_trunk` of the upsampled features of
        the frames whose boxes are read gives their regression features."""
        up = self.upsample(x)
        half = self.in_conv[0].out_channels // 2
        return up, self.in_conv.output_channels(up, half, 2 * half)

    def regression_trunk(self, up: Tensor) -> Tensor:
        """The regression features ``[N, D, G, G]`` from :meth:`classification_trunk`'s upsampled features."""
        return self.in_conv.output_channels(up, 0, self.in_conv[0].out_channels // 2)

    def regress_cells(self, up: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """Offsets ``[N, m, 4]`` of the m anchors of one cell per image (eval mode): the same numbers as
        ``regress(regression_trunk(up))`` at cells ``(rows, cols)`` (``[N]`` each), from the upsampled features
        ``[N, D, G, G]`` of :meth:`classification_trunk`. The L 3x3 convs of the regression branch are evaluated
        on the cell's receptive field only: a ``(2L+1)^2`` window, shrinking by one on each side per conv, with
        the positions outside the map set to zero after each conv as the next conv's padding would."""
        convs = [m for m in self.reg_convs if isinstance(m, ConvBNAct)]
        radius, grid = len(convs) + 2, up.shape[-1]  # in_conv, the ConvBNAct layers, reg_out
        window = torch.arange(-radius, radius + 1, device=up.device)  # offsets from the cell
        rows_at, cols_at = rows[:, None] + window, cols[:, None] + window  # [N, 2L+1] map positions
        padded = F.pad(up, (radius, radius, radius, radius))  # zeros outside the map, as in_conv's padding
        index = torch.arange(up.shape[0], device=up.device)[:, None, None]
        x = padded[index, :, radius + rows_at[:, :, None], radius + cols_at[:, None, :]].permute(0, 3, 1, 2)
        layers = [(self.in_conv, self.in_conv[0].out_channels // 2), *((conv, None) for conv in convs)]
        for depth, (conv, stop) in enumerate(layers, start=1):
            x = conv.output_channels(x, 0, stop, padding=0)  # [N, D, 2(L-depth)+1, 2(L-depth)+1]
            inside_rows = ((rows_at >= 0) & (rows_at < grid))[:, depth : rows_at.shape[1] - depth]
            inside_cols = ((cols_at >= 0) & (cols_at < grid))[:, depth : cols_at.shape[1] - depth]
            x = x * (inside_rows[:, None, :, None] & inside_cols[:, None, None, :]).to(x.dtype)
        out = F.conv2d(x, self.reg_out.weight, self.reg_out.bias)  # [N, m*4, 1, 1]
        return out.view(out.shape[0], self.anchors_per_cell, 4)

    def regress(self, reg: Tensor) -> Tensor:
        """Regression half: ``[N, D, G, G]`` -> offsets ``[N, A, 4]``."""
        reg = self.reg_out(self.reg_convs(reg))  # [N, m*4, G, G], channel = anchor * 4 + coordinate
        return reg.permute(0, 2, 3, 1).reshape(reg.shape[0], -1, 4)

    def classify(self, cls: Tensor) -> Tensor:
        """Classification half: ``[N, D, G, G]`` -> logits ``[N, A]``."""
        cls = self.cls_out(self.cls_convs(cls))  # [N, m, G, G]
        return cls.permute(0, 2, 3, 1).reshape(cls.shape[0], -1)


def decode_boxes(offsets: Tensor, anchors: Tensor) -> Tensor:
    """``B = dB + B_anchor`` in centre/size form (no exp encoding, as released), returned as normalised xyxy.

    Decoded in float32 whatever the offsets' dtype: in bfloat16 a coordinate near 1 is only good to ~1/256.

    Args:
        offsets: ``[..., A, 4]`` (dcx, dcy, dw, dh).
        anchors: ``[A, 4]`` normalised xyxy.

    Returns:
        ``[..., A, 4]`` normalised xyxy, float32.
    """
    return cxcywh_to_xyxy(offsets.float() + xyxy_to_cxcywh(anchors.float()))


def top_boxes(logits: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Best anchor per frame.

    Args:
        logits: [B, T, A]; boxes: [B, T, A, 4] normalised xyxy.

    Returns:
        (scores [B, T] = max logit, boxes [B, T, 4] of that anchor with sorted corners).
    """
    scores, index = logits.max(dim=-1)
    best = boxes.gather(2, index[..., None, None].expand(*index.shape, 1, 4)).squeeze(2)
    return scores, sorted_corners(best)
