"""Anchor head (prediction head of every stage) and box decoding, paper Eq. (6)-(7) and B = dB + B_anchor."""

from __future__ import annotations

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
