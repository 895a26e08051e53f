"""The authors' released checkpoints (VQLoC, PRVQL) mapped onto this network, key by key.

Layouts (``docs/MODEL.md``, "The authors' checkpoints"): a training checkpoint ``{"epoch", "state_dict", ...}`` or a
bare state dict, with or without a ``module.`` prefix, holding the whole model with the DINOv2 backbone in the
official hub layout under ``backbone.``. VQLoC has one stage at the top level; PRVQL has ``clipencoderlayers.N``
plus ``last_clipencoderlayer`` and the shared knowledge modules (``ca``, ``topk_conv``, ``s_mlp``/``t_mlp``/
``ks_mlp``). The CAB is either ``nn.TransformerDecoderLayer`` (``self_attn`` + ``multihead_attn`` + ``norm1..3``) or
the single cross-attention layer of the PRVQL file (``self_attn`` used as the cross-attention, ``norm1..2``).

:func:`detect` reads what a state dict is from its keys and shapes, :func:`released_config` resolves the preset
with the parity switches and the sizes found, and :func:`map_state` renames every used tensor to this package's
names (strict: an unknown key, a missing key or a wrong shape raises :class:`CheckpointError` naming them). Dead
modules (never used by the released forward pass) are dropped and counted by prefix.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from prvql.config import Config, apply_overrides, config_from_dict, config_to_dict, load_config
from prvql.errors import CheckpointError, ConfigError
from prvql.model.dinov2_weights import to_timm_layout
from prvql.weights_file import torch_load_untrusted

# backbone width -> DINOv2 size letter, and each size's full depth
_VIT_WIDTHS = {384: "s", 768: "b", 1024: "l", 1536: "g"}
_VIT_DEPTHS = {"s": 12, "b": 12, "l": 24, "g": 40}
_DINOV2_PATCH = 14  # every released backbone is a DINOv2 ViT/14
PRESETS = {"vqloc": "vqloc_vitb14", "prvql": "prvql_released"}
_PRVQL_STAGE_PREFIXES = ("clipencoderlayers.", "last_clipencoderlayer.")


@dataclass(frozen=True)
class Detected:
    """What a released state dict holds.

    Attributes:
        model: ``"vqloc"`` or ``"prvql"``.
        stage_prefixes: key prefix of each stage, in order (``""`` for VQLoC).
        cab_layout: ``"decoder"`` (self-attn + cross-attn + FFN) or ``"cross"`` (cross-attn + FFN).
        backbone: our backbone name, e.g. ``dinov2_vitb14``.
        backbone_depth: blocks in the file (None when it is the size's full depth).
    """

    model: str
    stage_prefixes: tuple[str, ...]
    cab_layout: str
    backbone: str
    backbone_depth: int | None

    @property
    def num_stages(self) -> int:
        return len(self.stage_prefixes)

    @property
    def preset(self) -> str:
        return PRESETS[self.model]


def read_released(path: str | Path) -> dict[str, Tensor]:
    """The model tensors of a released checkpoint (``state_dict`` of a training checkpoint, or a bare state dict),
    read with ``torch.load(weights_only=True)``; a common ``module.`` prefix is removed.

    Raises:
        CheckpointError: missing file, a payload that needs code to unpickle, a truncated/corrupt file, or no
            state dict of tensors inside; the message names the file.
    """
    data = torch_load_untrusted(path, "checkpoint", mmap=True)
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict) and "state_dict" not in data:
        state = state["model"]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: no state dict inside (expected a dict with 'state_dict', or a state dict)")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: key '{bad[0]}' of the state dict is not a tensor")
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def is_released_state(state: dict[str, Tensor]) -> bool:
    """True when the keys look like a VQLoC or PRVQL state dict (a ``reduce`` module and a stage)."""
    return "reduce.0.weight" in state and ("pe_3d" in state or any(k.startswith(_PRVQL_STAGE_PREFIXES) for k in state))


def detect(state: dict[str, Tensor], source: str | Path) -> Detected:
    """Model, stages, CAB layout and backbone of a released state dict, from its keys and shapes.

    Raises:
        CheckpointError: naming ``source`` when it is neither model or has no DINOv2 backbone.
    """
    if "pe_3d" in state:
        model, prefixes = "vqloc", ("",)
    else:
        indices = sorted(
            {int(m.group(1)) for k in state if (m := re.match(r"clipencoderlayers\.(\d+)\.", k)) is not None}
        )
        if not indices or "last_clipencoderlayer.pe_3d" not in state:
            raise CheckpointError(
                f"{source}: neither a VQLoC ('pe_3d') nor a PRVQL ('clipencoderlayers.N.', 'last_clipencoderlayer.') "
                "state dict"
            )
        if indices != list(range(len(indices))):
            raise CheckpointError(f"{source}: clipencoderlayers indices {indices} are not 0..{len(indices) - 1}")
        model, prefixes = "prvql", (*(f"clipencoderlayers.{i}." for i in indices), "last_clipencoderlayer.")
    cab = prefixes[0] + "CQ_corr_transformer.0."
    layout = "decoder" if f"{cab}multihead_attn.in_proj_weight" in state or f"{cab}norm3.weight" in state else "cross"
    cls = state.get("backbone.cls_token")
    if cls is None:
        raise CheckpointError(f"{source}: missing key 'backbone.cls_token' (the DINOv2 backbone is not in the file)")
    width = int(cls.shape[-1])
    if width not in _VIT_WIDTHS:
        raise CheckpointError(f"{source}: key 'backbone.cls_token' has width {width}, not a DINOv2 ViT-S/B/L/g")
    size = _VIT_WIDTHS[width]
    depth = len({m.group(1) for k in state if (m := re.match(r"backbone\.blocks\.(\d+)\.", k)) is not None})
    registers = "_reg" if "backbone.register_tokens" in state else ""
    return Detected(
        model=model,
        stage_prefixes=prefixes,
        cab_layout=layout,
        backbone=f"dinov2_vit{size}14{registers}",
        backbone_depth=None if depth == _VIT_DEPTHS[size] else depth,
    )


def _shape(state: dict[str, Tensor], key: str, source: str | Path) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{source}: missing key '{key}'")
    return tuple(state[key].shape)


def _count(state: dict[str, Tensor], pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.match(pattern, k)) is not None})


def released_config(
    det: Detected,
    state: dict[str, Tensor],
    source: str | Path,
    config: str | Path | Config | None = None,
    overrides: tuple[str, ...] | list[str] = (),
) -> Config:
    """The config a converted checkpoint runs with: the preset :attr:`Detected.preset` (or ``config``), the sizes
    read from the tensors (widths, layer counts, grid, frames, AKG slots, backbone), then ``overrides``; the anchors per
    cell and every other shape are checked against the built model by :func:`map_state`.

    The backbone weights come from the checkpoint, so ``model.backbone.weights`` is None.
    """
    first = det.stage_prefixes[0]
    dim = _shape(state, "reduce.0.weight", source)[0]
    down_total = _count(state, rf"{re.escape(first)}down_heads\.(\d+)\.")
    grid = 2 ** (down_total + 1)  # the released code allocates log2(grid) - 1 stride-2 convs
    if det.model == "prvql":
        positions = _shape(state, "s_mlp.fc1.weight", source)[1]
        if math.isqrt(positions) ** 2 != positions:
            raise CheckpointError(f"{source}: key 's_mlp.fc1.weight' is not square-grid sized ({positions})")
        grid = math.isqrt(positions)
    base = config if isinstance(config, Config) else load_config(config or det.preset)
    stride = _DINOV2_PATCH
    data = config_to_dict(base)
    model = data["model"]
    model["backbone"].update(name=det.backbone, weights=None, depth=det.backbone_depth)
    model.update(input_size=grid * stride, dim=dim, num_stages=det.num_stages)
    model["cab"]["clip_self_attention"] = det.cab_layout == "decoder"
    model["cab"]["ffn_dim"] = _shape(state, f"{first}CQ_corr_transformer.0.linear1.weight", source)[0]
    model["temporal"]["num_layers"] = _count(state, rf"{re.escape(first)}feat_corr_transformer\.(\d+)\.")
    model["temporal"]["ffn_dim"] = _shape(state, f"{first}feat_corr_transformer.0.linear1.weight", source)[0]
    model["head"]["num_convs"] = _count(state, rf"{re.escape(first)}head\.regression_conv\.(\d+)\.")
    model["head"]["upsample_steps"] = _count(state, rf"{re.escape(first)}head\.up_convs\.(\d+)\.")
    if det.model == "prvql":
        model["akg"]["top_n"] = _shape(state, "topk_conv.conv.weight", source)[1] // dim
        model["qfr"]["ffn_dim"] = _shape(state, "ca.hidden_intermediate.dense.weight", source)[0]
    try:
        cfg = config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    cfg = apply_overrides(cfg, overrides)
    coarse = cfg.model.input_size // stride
    for _ in range(cfg.model.temporal.downsample_steps):
        coarse = (coarse + 1) // 2
    tokens = _shape(state, f"{first}pe_3d", source)[1]
    if tokens % (coarse * coarse):
        raise CheckpointError(
            f"{source}: key '{first}pe_3d' has {tokens} positions, not a multiple of the {coarse}x{coarse} grid"
        )
    if not any(o.startswith("model.num_frames=") for o in overrides):
        cfg.model.num_frames = tokens // (coarse * coarse)
    return cfg


def _conv_bn(ours: str, conv: str, bn: str | None = None) -> dict[str, str]:
    """A released conv (``conv``) + BatchNorm (``bn``; default ``conv.1`` with the conv at ``conv.0``) -> our
    ConvBNAct ``ours``."""
    if bn is None:
        conv, bn = f"{conv}.0", f"{conv}.1"
    names = {f"{ours}.0.{p}": f"{conv}.{p}" for p in ("weight", "bias")}
    parts = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    names.update({f"{ours}.1.{p}": f"{bn}.{p}" for p in parts})
    return names


def _linear(ours: str, theirs: str) -> dict[str, str]:
    return {f"{ours}.weight": f"{theirs}.weight", f"{ours}.bias": f"{theirs}.bias"}


def _attention(ours: str, theirs: str) -> dict[str, str]:
    names = {f"{ours}.in_proj_weight": f"{theirs}.in_proj_weight", f"{ours}.in_proj_bias": f"{theirs}.in_proj_bias"}
    names.update(_linear(f"{ours}.out_proj", f"{theirs}.out_proj"))
    return names


def _stage_names(cfg: Config, det: Detected, k: int, theirs: str) -> dict[str, str]:
    """Our key -> released key for stage ``k`` (released prefix ``theirs``)."""
    ours = f"stages.{k}."
    cab = f"{theirs}CQ_corr_transformer.0"
    if det.cab_layout == "decoder":
        names = _attention(f"{ours}cab.self_attn", f"{cab}.self_attn")
        names.update(_linear(f"{ours}cab.self_norm", f"{cab}.norm1"))
        names.update(_attention(f"{ours}cab.cross_attn", f"{cab}.multihead_attn"))
        names.update(_linear(f"{ours}cab.cross_norm", f"{cab}.norm2"))
        names.update(_linear(f"{ours}cab.ffn.norm", f"{cab}.norm3"))
    else:
        names = _attention(f"{ours}cab.cross_attn", f"{cab}.self_attn")
        names.update(_linear(f"{ours}cab.cross_norm", f"{cab}.norm1"))
        names.update(_linear(f"{ours}cab.ffn.norm", f"{cab}.norm2"))
    names.update(_linear(f"{ours}cab.ffn.linear1", f"{cab}.linear1"))
    names.update(_linear(f"{ours}cab.ffn.linear2", f"{cab}.linear2"))
    for i in range(cfg.model.temporal.downsample_steps):
        names.update(_conv_bn(f"{ours}downsample.{i}", f"{theirs}down_heads.{i}"))
    names[f"{ours}temporal.pos_embed"] = f"{theirs}pe_3d"
    for i in range(cfg.model.temporal.num_layers):
        layer, src = f"{ours}temporal.layers.{i}", f"{theirs}feat_corr_transformer.{i}"
        names.update(_attention(f"{layer}.self_attn", f"{src}.self_attn"))
        names.update(_linear(f"{layer}.norm", f"{src}.norm1"))
        names.update(_linear(f"{layer}.ffn.linear1", f"{src}.linear1"))
        names.update(_linear(f"{layer}.ffn.linear2", f"{src}.linear2"))
        names.update(_linear(f"{layer}.ffn.norm", f"{src}.norm2"))
    head = f"{theirs}head"
    for i in range(cfg.model.head.upsample_steps):
        names.update(_linear(f"{ours}head.upsample.{i}", f"{head}.up_convs.{i}"))
    names.update(_conv_bn(f"{ours}head.in_conv", f"{head}.in_conv"))
    for i in range(cfg.model.head.num_convs):  # index 0 of our halves is the Dropout
        names.update(_conv_bn(f"{ours}head.reg_convs.{i + 1}", f"{head}.regression_conv.{i}"))
        names.update(_conv_bn(f"{ours}head.cls_convs.{i + 1}", f"{head}.classification_conv.{i}"))
    names.update(_linear(f"{ours}head.reg_out", f"{head}.regression_head"))
    names.update(_linear(f"{ours}head.cls_out", f"{head}.classification_head"))
    return names


def _knowledge_names() -> dict[str, str]:
    """Our key -> released key for the modules shared by the PRVQL stages (QKV of ``ca`` are concatenated)."""
    names = _conv_bn("qfr.cnb", "topk_conv.conv", "topk_conv.bn")
    names.update(_linear("qfr.cab.cross_attn.out_proj", "ca.attention.output.dense"))
    names.update(_linear("qfr.cab.cross_norm", "ca.attention.output.LayerNorm"))
    names.update(_linear("qfr.cab.ffn.linear1", "ca.hidden_intermediate.dense"))
    names.update(_linear("qfr.cab.ffn.linear2", "ca.output.dense"))
    names.update(_linear("qfr.cab.ffn.norm", "ca.output.LayerNorm"))
    for mlp in ("s_mlp", "t_mlp", "ks_mlp"):
        names.update(_linear(f"skg.{mlp}.0", f"{mlp}.fc1"))
        names.update(_linear(f"skg.{mlp}.2", f"{mlp}.fc2"))
    return names


def _is_dead(key: str, cfg: Config, det: Detected) -> str | None:
    """The dead-module prefix ``key`` belongs to, or None."""
    for prefix in det.stage_prefixes:
        if key.startswith(f"{prefix}query_down_heads."):
            return "query_down_heads"
        match = re.match(rf"{re.escape(prefix)}down_heads\.(\d+)\.", key)
        if match and int(match.group(1)) >= cfg.model.temporal.downsample_steps:
            return "down_heads (unused)"
    if key.startswith("ca.memory_intermediate."):
        return "ca.memory_intermediate"
    if key == "backbone.mask_token":
        return "backbone.mask_token"
    return None


def map_state(
    state: dict[str, Tensor], det: Detected, cfg: Config, expected: dict[str, Tensor], source: str | Path
) -> tuple[dict[str, Tensor], Counter]:
    """Rename and reshape the released tensors to this package's ``expected`` state dict (``model.state_dict()``).

    Returns:
        (every tensor of ``expected``, float32 or as stored for integer buffers) and the dropped dead tensors counted
        by prefix.

    Raises:
        CheckpointError: naming ``source`` and the unexpected, missing or mis-shaped key(s).
    """
    names: dict[str, str] = {}
    for ours, conv in ((0, 0), (1, 3)):  # released reduce: conv, BN, LeakyReLU, conv, BN, LeakyReLU
        names.update(_conv_bn(f"reduction.{ours}", f"reduce.{conv}", f"reduce.{conv + 1}"))
    for k, prefix in enumerate(det.stage_prefixes):
        names.update(_stage_names(cfg, det, k, prefix))
    if det.model == "prvql":
        names.update(_knowledge_names())
    used = set(names.values())
    dropped: Counter = Counter()
    unexpected = []
    backbone_state: dict[str, Tensor] = {}
    for key in state:
        dead = _is_dead(key, cfg, det)
        if dead is not None:
            dropped[dead] += 1
        elif key.startswith("backbone."):
            backbone_state[key.removeprefix("backbone.")] = state[key]
        elif key not in used and not re.match(r"ca\.attention\.self\.(query|key|value)\.(weight|bias)$", key):
            unexpected.append(key)
    if unexpected:
        more = f" (and {len(unexpected) - 3} more)" if len(unexpected) > 3 else ""
        raise CheckpointError(f"{source}: unexpected key(s) {', '.join(repr(k) for k in unexpected[:3])}{more}")
    out: dict[str, Tensor] = {}
    missing = [theirs for theirs in names.values() if theirs not in state]
    if det.model == "prvql":
        for part in ("weight", "bias"):
            qkv = [f"ca.attention.self.{n}.{part}" for n in ("query", "key", "value")]
            missing += [k for k in qkv if k not in state]
            if all(k in state for k in qkv):
                out[f"qfr.cab.cross_attn.in_proj_{part}"] = torch.cat([state[k] for k in qkv])
    for ours, theirs in names.items():
        if theirs in state:
            out[ours] = state[theirs]
    for key, value in to_timm_layout(backbone_state, Path(str(source))).items():
        out[f"backbone.vit.{key}"] = value
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise CheckpointError(f"{source}: missing key(s) {', '.join(repr(k) for k in missing[:3])}{more}")
    for k in range(det.num_stages):
        key = f"stages.{k}.head.reg_out"
        for part in ("weight", "bias"):
            value = out[f"{key}.{part}"]
            # released regression channels are (cy, cx, h, w) per anchor; ours are (cx, cy, w, h)
            out[f"{key}.{part}"] = value.unflatten(0, (-1, 4))[:, [1, 0, 3, 2]].flatten(0, 1)

    def theirs(ours: str) -> str:
        if ours.startswith("backbone.vit."):
            return "backbone." + ours.removeprefix("backbone.vit.")
        return "ca.attention.self.*" if ours.startswith("qfr.cab.cross_attn.in_proj") else names.get(ours, ours)

    extra = sorted(set(out) - set(expected))
    if extra:
        raise CheckpointError(f"{source}: unexpected key(s) for this model: {', '.join(theirs(k) for k in extra[:3])}")
    absent = sorted(set(expected) - set(out))
    if absent:
        more = f" (and {len(absent) - 3} more)" if len(absent) > 3 else ""
        listed = ", ".join(theirs(k) for k in absent[:3])
        raise CheckpointError(f"{source}: missing key(s) for this model: {listed}{more}")
    for key, value in expected.items():
        if tuple(out[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source}: key '{theirs(key)}' has shape {tuple(out[key].shape)}, "
                f"the model expects {tuple(value.shape)}"
            )
        out[key] = out[key].to(value.dtype)
    return out, dropped


@dataclass
class Converted:
    """A released checkpoint loaded into this package's network.

    Attributes:
        cfg: the resolved config (preset, sizes read from the file, overrides).
        model: the network with every tensor from the file, in eval mode, on the CPU.
        detected: what the file is.
        mapped: tensors taken from the file (the ``ca`` query/key/value triples count as three).
        dropped: dead tensors dropped, by prefix.
    """

    cfg: Config
    model: nn.Module
    detected: Detected
    mapped: int
    dropped: Counter

    def summary(self, source: str | Path) -> str:
        """One line: model, stages, CAB layout, backbone, tensors mapped and dropped, preset."""
        det = self.detected
        depth = "" if det.backbone_depth is None else f" (depth {det.backbone_depth})"
        dropped = ", ".join(f"{prefix} {n}" for prefix, n in sorted(self.dropped.items())) or "none"
        cab = "decoder (self-attn + cross-attn + FFN)" if det.cab_layout == "decoder" else "cross-attn + FFN"
        return (
            f"{source}: {det.model.upper()}, {det.num_stages} stage(s), CAB {cab}, backbone {det.backbone}{depth}, "
            f"{self.mapped} tensors mapped, {sum(self.dropped.values())} dropped ({dropped}), preset {det.preset}"
        )


def load_released(
    path: str | Path,
    config: str | Path | Config | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    state: dict[str, Tensor] | None = None,
) -> Converted:
    """Read, detect, configure, build and load an authors' checkpoint (nothing is written).

    Args:
        path: the ``.pth`` / ``.pth.tar`` file.
        config: preset or config file (or a Config) to start from instead of the detected preset.
        overrides: dotted ``key=value`` overrides applied last.
        state: the file's state dict when already read (:func:`read_released`).

    Raises:
        CheckpointError / ConfigError: naming the file and the key or reason.
    """
    from prvql.model.backbone import build_backbone
    from prvql.model.prvql import build_prvql

    state = read_released(path) if state is None else state
    if not is_released_state(state):
        raise CheckpointError(
            f"{path}: not a VQLoC or PRVQL checkpoint (no 'reduce.0.weight' with a 'pe_3d' or 'clipencoderlayers.' key)"
        )
    det = detect(state, path)
    cfg = released_config(det, state, path, config, overrides)
    with torch.device("meta"):
        expected = build_prvql(cfg.model).state_dict()
    tensors, dropped = map_state(state, det, cfg, expected, path)
    with torch.device("meta"):  # its weights come from the file: skip the (slow) random initialisation
        backbone = build_backbone(cfg.model.backbone)
    model = build_prvql(cfg.model, backbone=backbone)
    model.load_state_dict(tensors, strict=True, assign=True)
    mapped = len(state) - sum(dropped.values())
    return Converted(cfg=cfg, model=model.eval(), detected=det, mapped=mapped, dropped=dropped)
