"""Feature refinement with knowledge: query (QFR, paper Eq. 13) and video (VFR, Eq. 14)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prvql.model.cross_attention import CrossAttentionBlock
from prvql.model.layers import ConvBNAct

QFR_MODES = ("cross_attention", "add", "concat")


class QueryFeatureRefinement(nn.Module):
    """QFR: ``Q_{k+1} = combine(Q_k, CNB(K^a_k))``.

    CNB folds the n knowledge slots into channels and applies conv3x3 ``n*dim -> dim`` + BN + ReLU, giving an
    ``r x r`` knowledge map (GroupNorm instead of BN with ``norm_groups`` > 0: per-sample statistics, so an
    all-zero knowledge input -- every slot below tau -- means the same in training and at eval).
    Combination (paper Tab. 10):

    - ``"cross_attention"`` (paper, released): a CAB with the query tokens as queries and the ``r*r`` knowledge
      tokens as keys/values (the released BERT cross layer: post-LN, eps 1e-12, GELU FFN, dropout).
    - ``"add"``: the knowledge map, bilinearly resized to the query's grid, is added to Q_k (the query crop and
      the RoI both frame the target, so their grids are aligned up to scale).
    - ``"concat"``: Q_k and the resized knowledge map are concatenated along channels and fused by a 1x1 conv
      ``2*dim -> dim``.

    Args:
        dim: model width.
        top_n: n, knowledge slots.
        mode: one of :data:`QFR_MODES`.
        num_heads: CAB heads (cross_attention mode).
        ffn_dim: CAB FFN width (cross_attention mode).
        dropout: CAB dropout (cross_attention mode).
        norm_groups: 0 = BatchNorm in CNB (paper, released); > 0 = GroupNorm with that many groups.
    """

    def __init__(
        self, dim: int, top_n: int, mode: str, num_heads: int, ffn_dim: int, dropout: float, norm_groups: int = 0
    ) -> None:
        super().__init__()
        if mode not in QFR_MODES:
            raise ValueError(f"unknown QFR mode '{mode}' (one of {', '.join(QFR_MODES)})")
        self.mode = mode
        self.cnb = ConvBNAct(top_n * dim, dim, leaky=False, norm_groups=norm_groups)
        cross = mode == "cross_attention"
        self.cab = CrossAttentionBlock(dim, num_heads, ffn_dim, dropout, eps=1e-12) if cross else None
        self.fuse = nn.Conv2d(2 * dim, dim, 1) if mode == "concat" else None

    def forward(self, query: Tensor, knowledge: Tensor) -> Tensor:
        """Refine the query features.

        Args:
            query: Q_k ``[B, D, H, W]``.
            knowledge: K^a_k ``[B, n, D, r, r]``.

        Returns:
            Q_{k+1} ``[B, D, H, W]``.
        """
        b, d, h, w = query.shape
        kmap = self.cnb(knowledge.flatten(1, 2))  # [B, D, r, r]
        if self.cab is not None:
            tokens = query.flatten(2).transpose(1, 2)[:, None]  # [B, 1, H*W, D]
            refined, _ = self.cab(tokens, kmap.flatten(2).transpose(1, 2))
            return refined[:, 0].transpose(1, 2).reshape(b, d, h, w)
        resized = F.interpolate(kmap, size=(h, w), mode="bilinear", align_corners=False)
        if self.fuse is None:
            return query + resized
        return self.fuse(torch.cat([query, resized], dim=1))


class VideoFeatureRefinement(nn.Module):
    """VFR: ``V_{k+1} = beta * (K^s_k * base) + (1 - beta) * base`` with K^s broadcast over channels.

    ``base`` is V_k (``"current"``, released code: refinement accumulates) or V_1 (``"initial"``, paper).

    Args:
        beta: refinement strength; 0 makes VFR the identity on ``base``.
        base: ``"current"`` or ``"initial"``.
    """

    def __init__(self, beta: float, base: str = "current") -> None:
        super().__init__()
        if base not in ("current", "initial"):
            raise ValueError(f"unknown VFR base '{base}' (current or initial)")
        self.beta, self.base = beta, base

    def forward(self, current: Tensor, initial: Tensor, knowledge: Tensor) -> Tensor:
        """Refine the video features.

        Args:
            current: V_k ``[B, T, D, H, W]``.
            initial: V_1 ``[B, T, D, H, W]``.
            knowledge: K^s_k ``[B, T, H, W]``.

        Returns:
            V_{k+1} ``[B, T, D, H, W]``.
        """
        base = current if self.base == "current" else initial
        # one pass over the features: base * (beta * K + 1 - beta), the per-position factor formed first
        return base * (self.beta * knowledge[:, :, None] + (1 - self.beta)).to(base.dtype)
