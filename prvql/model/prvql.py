"""The PRVQL network: frozen backbone -> channel reduction -> K stages with knowledge-guided refinement between.

``build_prvql(cfg)`` is the only place that reads :class:`prvql.config.ModelConfig`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from prvql.boxes import sorted_corners
from prvql.config import ModelConfig, check_model_sizes
from prvql.errors import ConfigError
from prvql.model.anchors import make_anchors
from prvql.model.backbone import build_backbone
from prvql.model.cross_attention import CrossAttentionBlock
from prvql.model.head import AnchorHead
from prvql.model.knowledge import AppearanceKnowledgeGeneration, SpatialKnowledgeGeneration
from prvql.model.layers import ChannelReduction, ConvBNAct
from prvql.model.refinement import QFR_MODES, QueryFeatureRefinement, VideoFeatureRefinement
from prvql.model.stage import RefinementStage, StageOutput
from prvql.model.temporal import MaskedSpatioTemporalAttention


class PRVQL(nn.Module):
    """Progressive knowledge-guided refinement for visual query localisation (paper Fig. 2).

    Stage k sees (V_k, Q_k) and predicts boxes and logits; after every stage but the last, AKG + QFR refine the
    query (Q_{k+1}) and SKG + VFR refine the video features (V_{k+1}). AKG/QFR and SKG/VFR can each be absent
    (ablations); QFR, SKG and VFR are single modules shared by all stages, as released.

    Args:
        backbone: feature extractor with ``out_channels`` and ``stride`` that freezes itself (gradients only
            through layers it fine-tunes, see :mod:`prvql.model.backbone`).
        reduction: backbone channels -> model width, applied once.
        stages: K :class:`RefinementStage` with separate weights.
        anchors: ``[A, 4]`` normalised xyxy anchors of the head grid.
        num_frames: T, frames per window.
        grid_size: H = W of the backbone feature map.
        akg: appearance knowledge generation (requires ``qfr``) or None.
        qfr: query feature refinement or None.
        skg: spatial knowledge generation (requires ``vfr``) or None.
        vfr: video feature refinement or None.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        reduction: nn.Module,
        stages: list[RefinementStage],
        anchors: Tensor,
        num_frames: int,
        grid_size: int,
        akg: AppearanceKnowledgeGeneration | None = None,
        qfr: QueryFeatureRefinement | None = None,
        skg: SpatialKnowledgeGeneration | None = None,
        vfr: VideoFeatureRefinement | None = None,
    ) -> None:
        super().__init__()
        if (akg is None) != (qfr is None) or (skg is None) != (vfr is None):
            raise ValueError("AKG needs QFR and SKG needs VFR (both or neither)")
        self.backbone = backbone
        self.backbone.eval()
        self.reduction = reduction
        self.stages = nn.ModuleList(stages)
        self.register_buffer("anchors", anchors, persistent=False)
        self.num_frames, self.grid_size = num_frames, grid_size
        self.akg, self.qfr, self.skg, self.vfr = akg, qfr, skg, vfr
        self.fused = False

    def train(self, mode: bool = True) -> PRVQL:
        """Set train/eval mode; the backbone always stays in eval mode (frozen BatchNorm statistics)."""
        if mode and self.fused:
            raise RuntimeError("a model fused for inference (fuse_for_inference) cannot be trained")
        super().train(mode)
        self.backbone.eval()
        return self

    def extract_features(self, images: Tensor) -> Tensor:
        """Backbone features: ``[N, 3, S, S]`` -> ``[N, C, S/stride, S/stride]`` (a gradient only through the
        backbone's fine-tuned layers, if any)."""
        return self.backbone(images)

    def forward(self, frames: Tensor, query: Tensor) -> dict:
        """Localise the query in every frame of each window.

        Args:
            frames: ``[B, T, 3, S, S]`` ImageNet-normalised.
            query: ``[B, 3, S, S]`` ImageNet-normalised query crop.

        Returns:
            See :meth:`forward_features`.
        """
        b, t = frames.shape[:2]
        feats = self.extract_features(torch.cat([query, frames.flatten(0, 1)]))
        query_feats, frame_feats = feats.split([b, b * t])
        return self.forward_features(frame_feats.view(b, t, *feats.shape[1:]), query_feats)

    def forward_features(self, frame_feats: Tensor, query_feats: Tensor) -> dict:
        """Everything after the backbone (lets a predictor reuse a clip's features for many queries).

        Args:
            frame_feats: ``[B, T, C, H, W]`` backbone features of the frames.
            query_feats: ``[B, C, H, W]`` backbone features of the query crops.

        Returns:
            ``{"boxes": [B, T, A, 4] normalised xyxy, "logits": [B, T, A], "anchors": [A, 4],
            "stages": [{"boxes", "logits"} per stage]}``; the top level is the last stage. With AKG also
            ``"akg_keep"``: [B, K-1, n] bool, whether each knowledge slot passed tau after each stage but the last.
        """
        b, t, c, h, w = frame_feats.shape
        self._check_grid(t, h, w, frame_feats.shape)
        feats = self.reduction(torch.cat([query_feats, frame_feats.flatten(0, 1)]))  # one BN call, as released
        query, video = feats.split([b, b * t])
        return self._refine(video.view(b, t, *video.shape[1:]), query, every_stage=True)

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """Inference only: backbone features reduced to the model width, ``[N, 3, S, S]`` -> ``[N, D, H, W]``.

        In eval mode the reduction is per image, so a clip's frames are embedded once and shared by every
        window and query (:meth:`forward_embedded`); equal to what :meth:`forward_features` computes inside.
        """
        return self.reduction(self.extract_features(images))

    def forward_embedded(self, video: Tensor, query: Tensor, stage_mean: bool = False, top: bool = False) -> dict:
        """Inference: the final stage's outputs from :meth:`embed` features, intermediate work kept to what is read.

        Between stages AKG reads the boxes of its top-n frames only, so earlier stages decode just those; the
        result equals :meth:`forward_features`'s final stage.

        Args:
            video: ``[B, T, D, H, W]`` embedded frames.
            query: ``[B, D, H, W]`` embedded query crops.
            stage_mean: the logits are the mean of every stage's anchor logits (boxes stay the last stage's);
                not in the paper.
            top: return each frame's best anchor only (what a predictor reads): the last stage regresses only that
                anchor's receptive field (:meth:`RefinementStage.anchor_boxes`), and ``"boxes"`` is replaced by
                ``"top_logits"`` ``[B, T]`` and ``"top_boxes"`` ``[B, T, 4]``, equal to
                :func:`~prvql.model.head.top_boxes` of the full output.

        Returns:
            ``{"boxes": [B, T, A, 4] normalised xyxy, "logits": [B, T, A], "anchors": [A, 4]}`` of the last stage
            (with ``top``: ``"top_logits"`` and ``"top_boxes"``, sorted corners, instead of ``"boxes"``).
        """
        self._check_grid(*video.shape[1:2], *video.shape[3:], video.shape)
        out = self._refine(video, query, every_stage=False, last_boxes=not top)
        logits = torch.stack([s["logits"] for s in out["stages"]]).mean(0) if stage_mean else out["logits"]
        if not top:
            return {"boxes": out["boxes"], "logits": logits, "anchors": out["anchors"]}
        scores, index = logits.max(dim=-1)  # [B, T], as top_boxes
        features = out["box_features"].flatten(0, 1)
        boxes = self.stages[-1].anchor_boxes(features, index.flatten(), self.anchors).view(*index.shape, 4)
        return {"logits": logits, "anchors": out["anchors"], "top_logits": scores, "top_boxes": sorted_corners(boxes)}

    def _check_grid(self, t: int, h: int, w: int, shape: torch.Size) -> None:
        if t != self.num_frames or (h, w) != (self.grid_size, self.grid_size):
            raise ValueError(
                f"frame features {tuple(shape)}: the model is built for {self.num_frames} frames "
                f"(model.num_frames) of {self.grid_size}x{self.grid_size} features (model.input_size)"
            )

    def _refine(self, video: Tensor, query: Tensor, every_stage: bool, last_boxes: bool = True) -> dict:
        """The K stages with refinement between them on reduced features ``[B, T, D, H, W]`` and ``[B, D, H, W]``;
        ``every_stage=False`` decodes earlier stages' boxes for AKG's frames only (their ``"boxes"`` in ``"stages"``
        are then None); ``last_boxes=False`` leaves the last stage's boxes undecoded too (``"boxes"`` None, its
        ``"box_features"`` returned instead)."""
        initial = video
        stages, keeps = [], []
        for index, stage in enumerate(self.stages):
            last = index == len(self.stages) - 1
            out = stage(
                video,
                query,
                self.anchors,
                return_attention=self.skg is not None and not last,
                boxes=every_stage or (last and last_boxes),
            )
            stages.append({"boxes": out.boxes, "logits": out.logits})
            if last:
                break
            if self.akg is not None:
                boxes = out.boxes if out.boxes is not None else self._akg_boxes(stage, out)
                frames, chosen, keep = self.akg.select(out.logits, boxes)
                query = self.qfr(query, self.akg.pool(video, frames, chosen, keep))
                keeps.append(keep)  # [B, n]: how often each knowledge slot is kept (training log)
            if self.skg is not None:
                video = self.vfr(video, initial, self.skg(out.cross_attention, out.temporal_attention))
        extra = {"akg_keep": torch.stack(keeps, dim=1)} if every_stage and keeps else {}
        if not last_boxes:
            extra["box_features"] = out.box_features
        return {**stages[-1], "anchors": self.anchors, "stages": stages, **extra}

    def _akg_boxes(self, stage: RefinementStage, out: StageOutput) -> Tensor:
        """``[B, T, A, 4]`` boxes decoded only in the frames AKG reads (zeros elsewhere, never read)."""
        b, t, a = out.logits.shape
        frames = self.akg.frames_read(out.logits)  # [B, n]
        rows = torch.arange(b, device=frames.device)[:, None].expand_as(frames)
        chosen = stage.deferred_boxes(out.box_features[rows, frames].flatten(0, 1), self.anchors)  # [B*n, A, 4]
        boxes = chosen.new_zeros(b, t, a, 4)
        boxes[rows, frames] = chosen.view(*frames.shape, a, 4)
        return boxes

    def fuse_for_inference(self) -> PRVQL:
        """Fold every eval-mode BatchNorm after a conv into that conv (same outputs, fewer passes over memory), and
        store the convs of the stages and of QFR channels-last (oneDNN's native layout: no reordering around each
        conv, and the stages' token layout ``[..., H, W, D]`` feeds the convs without a copy; outputs then come
        out channels-last too, read through reshapes).

        For inference only (``prvql predict``/``locate``/``demo`` call it after loading weights): it changes the
        module tree, so a fused model can no longer be trained or have a checkpoint loaded or saved. Returns self.
        """
        self.eval()
        for module in self.modules():
            if isinstance(module, ConvBNAct):
                module.fuse_batch_norm()
        for module in (*self.stages, self.qfr):
            if module is not None:
                module.to(memory_format=torch.channels_last)
        self.fused = True
        return self


def build_prvql(cfg: ModelConfig, backbone: nn.Module | None = None) -> PRVQL:
    """Build the network from the model config (the only reader of ``cfg``). Grid sizes follow from the
    backbone stride and ``cfg.input_size``; every ablation of the paper is a field of ``cfg``. ``backbone``: one
    already built from ``cfg.backbone`` (e.g. on the meta device, when a checkpoint supplies its weights)."""
    if not cfg.backbone.frozen:
        raise ConfigError("model.backbone.frozen: only a frozen backbone is supported")
    check_model_sizes(cfg)
    if cfg.qfr.mode not in QFR_MODES:
        raise ConfigError(f"model.qfr.mode: '{cfg.qfr.mode}' is not one of {', '.join(QFR_MODES)}")
    if cfg.vfr.base not in ("current", "initial"):
        raise ConfigError(f"model.vfr.base: '{cfg.vfr.base}' is not 'current' or 'initial'")
    if cfg.skg.temporal_source not in ("center", "received"):
        raise ConfigError(f"model.skg.temporal_source: '{cfg.skg.temporal_source}' is not 'center' or 'received'")
    backbone = build_backbone(cfg.backbone) if backbone is None else backbone
    if cfg.input_size % backbone.stride:
        raise ConfigError(f"model.input_size: {cfg.input_size} is not a multiple of the stride {backbone.stride}")
    grid = cfg.input_size // backbone.stride
    coarse = grid
    for _ in range(cfg.temporal.downsample_steps):
        coarse = (coarse + 1) // 2
    anchor_grid = coarse * 2**cfg.head.upsample_steps
    anchors_per_cell = len(cfg.head.anchor_sizes) * len(cfg.head.anchor_ratios)

    def stage() -> RefinementStage:
        cab = CrossAttentionBlock(
            cfg.dim, cfg.cab.num_heads, cfg.cab.ffn_dim, cfg.cab.dropout, cfg.cab.clip_self_attention
        )
        temporal = MaskedSpatioTemporalAttention(
            dim=cfg.dim,
            num_frames=cfg.num_frames,
            height=coarse,
            width=coarse,
            num_layers=cfg.temporal.num_layers,
            num_heads=cfg.temporal.num_heads,
            ffn_dim=cfg.temporal.ffn_dim,
            window=cfg.temporal.window,
            dropout=cfg.temporal.dropout,
            source=cfg.skg.temporal_source,
        )
        head = AnchorHead(cfg.dim, anchors_per_cell, cfg.head.upsample_steps, cfg.head.num_convs, cfg.head.dropout)
        return RefinementStage(cab, temporal, head, cfg.dim, cfg.temporal.downsample_steps)

    between = cfg.num_stages > 1
    akg = qfr = skg = vfr = None
    if between and cfg.akg.enabled:
        akg = AppearanceKnowledgeGeneration(
            cfg.akg.top_n, cfg.akg.tau, cfg.akg.roi_size, cfg.akg.swap_roi_axes, cfg.akg.clamp_boxes
        )
        qfr = QueryFeatureRefinement(
            cfg.dim,
            cfg.akg.top_n,
            cfg.qfr.mode,
            cfg.qfr.num_heads,
            cfg.qfr.ffn_dim,
            cfg.qfr.dropout,
            cfg.qfr.norm_groups,
        )
    if between and cfg.skg.enabled:
        skg = SpatialKnowledgeGeneration(grid, grid, cfg.skg.alpha, cfg.skg.learned_mlp)
        vfr = VideoFeatureRefinement(cfg.vfr.beta, cfg.vfr.base)
    return PRVQL(
        backbone=backbone,
        reduction=ChannelReduction(backbone.out_channels, cfg.dim),
        stages=[stage() for _ in range(cfg.num_stages)],
        anchors=make_anchors(cfg.input_size, anchor_grid, cfg.head.anchor_sizes, cfg.head.anchor_ratios),
        num_frames=cfg.num_frames,
        grid_size=grid,
        akg=akg,
        qfr=qfr,
        skg=skg,
        vfr=vfr,
    )
