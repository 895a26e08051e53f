"""Knowledge generation between stages: appearance (AKG, paper Eq. 8-10) and spatial (SKG, Eq. 11-12)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from prvql.boxes import clip_boxes, sorted_corners
from prvql.model.layers import autocast_off


class AppearanceKnowledgeGeneration(nn.Module):
    """AKG: RoI features of the target in the stage's most confident frames (no parameters).

    Per frame the best anchor's logit c_i and decoded box b_i are taken (Eq. 8); the ``top_n`` frames by c_i
    are kept (Eq. 9), a slot with sigmoid(c) < ``tau`` becomes zeros (released code: select, then zero-fill);
    each remaining box is RoI-aligned on that frame's stage-input features V_k (Eq. 10). Boxes are clamped to
    the map and put in (x1, y1, x2, y2) order; ``swap_roi_axes`` passes (y1, x1, y2, x2) as the released code
    did, and ``clamp_boxes=False`` skips the clamping and corner sorting, as released. The selection is not
    differentiable; gradients reach V_k through RoIAlign.

    Args:
        top_n: n, knowledge slots.
        tau: confidence threshold on sigmoid(logit).
        roi_size: RoIAlign output side.
        swap_roi_axes: reproduce the released code's transposed boxes.
        clamp_boxes: clamp to the map and sort the corners (False: the boxes as predicted, as released).
    """

    def __init__(
        self, top_n: int, tau: float, roi_size: int, swap_roi_axes: bool = False, clamp_boxes: bool = True
    ) -> None:
        super().__init__()
        self.top_n, self.tau, self.roi_size, self.swap_roi_axes = top_n, tau, roi_size, swap_roi_axes
        self.clamp_boxes = clamp_boxes

    @torch.no_grad()
    def select(self, logits: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Choose the knowledge frames.

        Args:
            logits: ``[B, T, A]`` anchor logits.
            boxes: ``[B, T, A, 4]`` decoded normalised xyxy boxes.

        Returns:
            frame indices ``[B, n]`` (by decreasing confidence), their best boxes ``[B, n, 4]`` and ``keep``
            ``[B, n]`` (sigmoid >= tau; False also for slots beyond T when T < n).
        """
        b, t = logits.shape[:2]
        best, anchor = logits.max(dim=2)  # [B, T]
        best_boxes = boxes.gather(2, anchor[:, :, None, None].expand(b, t, 1, 4)).squeeze(2)  # [B, T, 4]
        conf, frames = self._top_frames(best)
        keep = conf.sigmoid() >= self.tau
        missing = self.top_n - frames.shape[1]
        frames = F.pad(frames, (0, missing))
        keep = F.pad(keep, (0, missing), value=False)
        return frames, best_boxes.gather(1, frames[:, :, None].expand(b, self.top_n, 4)), keep

    def _top_frames(self, best: Tensor) -> tuple[Tensor, Tensor]:
        """The ``min(top_n, T)`` most confident frames of best-anchor logits ``[B, T]``: (confidences, indices)."""
        return best.topk(min(self.top_n, best.shape[1]), dim=1)

    @torch.no_grad()
    def frames_read(self, logits: Tensor) -> Tensor:
        """Indices ``[B, min(n, T)]`` of the only frames whose boxes :meth:`forward` reads (logits ``[B, T, A]``);
        the boxes of the other frames may be anything (inference decodes only these)."""
        return self._top_frames(logits.max(dim=2).values)[1]

    def forward(self, logits: Tensor, boxes: Tensor, video: Tensor) -> Tensor:
        """Appearance knowledge K^a_k: :meth:`select`, then :meth:`pool`.

        Args:
            logits: ``[B, T, A]``.
            boxes: ``[B, T, A, 4]`` normalised xyxy.
            video: stage-input features V_k ``[B, T, C, H, W]``.

        Returns:
            ``[B, n, C, r, r]``; zero slots where confidence is below tau.
        """
        return self.pool(video, *self.select(logits, boxes))

    def pool(self, video: Tensor, frames: Tensor, chosen: Tensor, keep: Tensor) -> Tensor:
        """RoIAlign of the chosen boxes in their frames (Eq. 10).

        Args:
            video: stage-input features V_k ``[B, T, C, H, W]``.
            frames, chosen, keep: :meth:`select`'s ``[B, n]`` indices, ``[B, n, 4]`` normalised boxes, ``[B, n]``.

        Returns:
            ``[B, n, C, r, r]``; zero slots where ``keep`` is False.
        """
        b, t, c, h, w = video.shape
        chosen = chosen.float()  # scaled by Python numbers: no host-to-device copy, no synchronisation
        ordered = torch.stack((chosen[..., 0::2] * w, chosen[..., 1::2] * h), dim=-1).flatten(-2)
        if self.clamp_boxes:
            ordered = sorted_corners(clip_boxes(ordered, h, w))
        if self.swap_roi_axes:
            ordered = ordered[..., [1, 0, 3, 2]]
        flat_index = (torch.arange(b, device=frames.device)[:, None] * t + frames).float()
        rois = torch.cat([flat_index[..., None], ordered], dim=-1).view(-1, 5)
        feats = roi_align(  # float32: bf16 would round box coordinates to a fraction of a cell
            video.flatten(0, 1).float(), rois, self.roi_size, spatial_scale=1.0, sampling_ratio=-1
        )
        feats = feats.view(b, self.top_n, c, self.roi_size, self.roi_size).to(video.dtype)
        return feats * keep[:, :, None, None, None].to(feats.dtype)


class SpatialKnowledgeGeneration(nn.Module):
    """SKG in the released code's form: one target-likelihood map per frame (Eq. 11-12).

    S' = each clip position's (head-averaged) cross-attention to the query's centre token; T' = each position's
    attention to its frame's centre token in the last masked self-attention layer, bilinearly upsampled to the
    backbone grid. Both are softmaxed over the ``H*W`` positions. With ``learned_mlp`` (released code),
    ``K^s = ks(HW * (alpha * t(T') + (1 - alpha) * s(S')))`` with three MLPs ``Linear(HW, HW) -> ReLU ->
    Linear(HW, HW)``; without, ``K^s = HW * (alpha * T' + (1 - alpha) * S')`` (mean 1). Not bounded. Computed in
    float32 under any autocast (returns float32).

    Args:
        height: backbone grid rows H.
        width: backbone grid columns W.
        alpha: weight of the temporal map (paper Eq. 12).
        learned_mlp: use the three MLPs.
    """

    def __init__(self, height: int, width: int, alpha: float, learned_mlp: bool = True) -> None:
        super().__init__()
        self.height, self.width, self.alpha = height, width, alpha
        positions = height * width

        def mlp() -> nn.Module:
            return nn.Sequential(nn.Linear(positions, positions), nn.ReLU(), nn.Linear(positions, positions))

        self.s_mlp = mlp() if learned_mlp else None
        self.t_mlp = mlp() if learned_mlp else None
        self.ks_mlp = mlp() if learned_mlp else None

    def forward(self, cross_attention: Tensor, temporal_attention: Tensor) -> Tensor:
        """Spatial knowledge K^s_k.

        Args:
            cross_attention: S' ``[B, T, H*W]``.
            temporal_attention: T' ``[B, T, h, w]``.

        Returns:
            ``[B, T, H, W]``, one map per frame (broadcast over channels by VFR).
        """
        b, t, positions = cross_attention.shape
        # float32 whatever the autocast: the softmaxed maps sit near 1 / (H*W), where bf16 keeps only a few dozen
        # distinct values, so under bf16 SKG would train on a different signal than fp32 inference gives it
        with autocast_off(cross_attention.device):
            s = cross_attention.float().softmax(dim=-1)
            temporal = F.interpolate(
                temporal_attention.flatten(0, 1)[:, None].float(),
                (self.height, self.width),
                mode="bilinear",
                align_corners=False,
            )
            tmap = temporal.view(b, t, positions).softmax(dim=-1)
            if self.ks_mlp is None:
                knowledge = positions * (self.alpha * tmap + (1 - self.alpha) * s)
            else:
                knowledge = self.ks_mlp(positions * (self.alpha * self.t_mlp(tmap) + (1 - self.alpha) * self.s_mlp(s)))
        return knowledge.view(b, t, self.height, self.width)
