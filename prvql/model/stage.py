"""One PRVQL stage (the released ``ClipEncoder``): CAB -> downsample -> masked ST attention -> anchor head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from prvql.model.cross_attention import CrossAttentionBlock
from prvql.model.head import AnchorHead, decode_boxes
from prvql.model.layers import ConvBNAct
from prvql.model.temporal import MaskedSpatioTemporalAttention


@dataclass
class StageOutput:
    """A stage's predictions and, when requested, the attention SKG reads.

    Attributes:
        boxes: ``[B, T, A, 4]`` normalised xyxy, float32 (also under autocast).
        logits: ``[B, T, A]``, float32.
        cross_attention: S' ``[B, T, H*W]``, attention of each clip position to the query's centre token.
        temporal_attention: T' ``[B, T, h, w]`` from the last masked self-attention layer.
        box_features: ``[B, T, D, G, G]`` the head's upsampled features when boxes were deferred (``boxes`` is
            then None; :meth:`RefinementStage.deferred_boxes` decodes the frames that are needed).
    """

    boxes: Tensor | None
    logits: Tensor
    cross_attention: Tensor | None = None
    temporal_attention: Tensor | None = None
    box_features: Tensor | None = None


class RefinementStage(nn.Module):
    """Stage k: Eq. (1) CAB, Eq. (2) downsampling, Eq. (3) masked spatio-temporal attention, Eq. (6)-(7) head.

    Args:
        cab: the query-to-frame cross-attention block.
        temporal: the masked spatio-temporal attention (with its positional embedding).
        head: the anchor head.
        dim: model width.
        downsample_steps: stride-2 ConvBNAct layers between the CAB and the temporal attention.
    """

    def __init__(
        self,
        cab: CrossAttentionBlock,
        temporal: MaskedSpatioTemporalAttention,
        head: AnchorHead,
        dim: int,
        downsample_steps: int,
    ) -> None:
        super().__init__()
        self.cab = cab
        self.downsample = nn.Sequential(*(ConvBNAct(dim, dim, stride=2) for _ in range(downsample_steps)))
        self.temporal = temporal
        self.head = head

    def forward(
        self, video: Tensor, query: Tensor, anchors: Tensor, return_attention: bool = False, boxes: bool = True
    ) -> StageOutput:
        """Localise the query in every frame.

        Args:
            video: V_k ``[B, T, D, H, W]``.
            query: Q_k ``[B, D, H, W]``.
            anchors: ``[A, 4]`` normalised xyxy.
            return_attention: also return S' and T' for SKG.
            boxes: decode boxes for every frame; False returns the head's upsampled features instead and skips the
                whole regression branch (eval mode: inference, when only a few frames' boxes are read).

        Returns:
            :class:`StageOutput`.
        """
        b, t, d, h, w = video.shape
        tokens = video.permute(0, 1, 3, 4, 2).reshape(b, t, h * w, d)
        memory = query.flatten(2).transpose(1, 2)  # [B, H*W, D]
        probe = None
        if return_attention:  # the query's centre token, as a key index
            probe = torch.full((1,), (query.shape[2] // 2) * query.shape[3] + query.shape[3] // 2, device=query.device)
        tokens, cross = self.cab(tokens, memory, probe)
        x = self.downsample(tokens.view(b * t, h, w, d).permute(0, 3, 1, 2))
        x, temporal = self.temporal(x.view(b, t, *x.shape[1:]), return_attention)
        decoded = deferred = None
        if boxes:
            reg, cls = self.head.trunk(x.flatten(0, 1))
            decoded = self.boxes(reg, anchors).view(b, t, -1, 4)  # before cls: dropout RNG order
        else:
            up, cls = self.head.classification_trunk(x.flatten(0, 1))
            deferred = up.view(b, t, *up.shape[1:])
        logits = self.head.classify(cls).float().view(b, t, -1)
        cross = None if cross is None else cross[..., 0]
        return StageOutput(decoded, logits, cross, temporal, deferred)

    def boxes(self, box_features: Tensor, anchors: Tensor) -> Tensor:
        """Decoded boxes ``[N, A, 4]`` (normalised xyxy, float32) from regression features ``[N, D, G, G]``."""
        return decode_boxes(self.head.regress(box_features), anchors)

    def deferred_boxes(self, box_features: Tensor, anchors: Tensor) -> Tensor:
        """Decoded boxes ``[N, A, 4]`` from :attr:`StageOutput.box_features` ``[N, D, G, G]`` of some frames."""
        return self.boxes(self.head.regression_trunk(box_features), anchors)

    def anchor_boxes(self, box_features: Tensor, index: Tensor, anchors: Tensor) -> Tensor:
        """The decoded box ``[N, 4]`` of one anchor per frame, ``index`` ``[N]`` into ``anchors`` ``[A, 4]``, from
        :attr:`StageOutput.box_features` ``[N, D, G, G]``: ``deferred_boxes(...)[range(N), index]``, regressing only
        the receptive field of each anchor's cell (:meth:`AnchorHead.regress_cells`)."""
        per_cell, grid = self.head.anchors_per_cell, box_features.shape[-1]
        cell = torch.div(index, per_cell, rounding_mode="floor")
        offsets = self.head.regress_cells(box_features, torch.div(cell, grid, rounding_mode="floor"), cell % grid)
        chosen = offsets.gather(1, (index % per_cell)[:, None, None].expand(-1, 1, 4))[:, 0]  # [N, 4]
        return decode_boxes(chosen, anchors[index])
