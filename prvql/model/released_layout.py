"""State dicts laid out as the authors' released VQLoC / PRVQL checkpoints (the keys and shapes that
:mod:`prvql.model.released_weights` maps): random values, any widths. The converter's tests use it at tiny widths and
``benchmarks/bench_convert.py`` at full ViT-B size, so neither needs the authors' files.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _conv_bn(prefix: str, cin: int, cout: int, k: int = 3) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield f"{prefix}.0.weight", (cout, cin, k, k)
    yield f"{prefix}.0.bias", (cout,)
    for part in BN:
        yield f"{prefix}.1.{part}", () if part == "num_batches_tracked" else (cout,)


def _linear(prefix: str, cin: int, cout: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield f"{prefix}.weight", (cout, cin)
    yield f"{prefix}.bias", (cout,)


def _mha(prefix: str, d: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield f"{prefix}.in_proj_weight", (3 * d, d)
    yield f"{prefix}.in_proj_bias", (3 * d,)
    yield from _linear(f"{prefix}.out_proj", d, d)


def _norm(prefix: str, d: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield f"{prefix}.weight", (d,)
    yield f"{prefix}.bias", (d,)


def stage_shapes(
    prefix: str,
    *,
    c: int,
    d: int,
    grid: int,
    frames: int,
    coarse: int,
    cab: str,
    cab_ffn: int,
    st_ffn: int,
    st_layers: int,
    head_convs: int,
    anchors: int,
) -> Iterator[tuple[str, tuple[int, ...]]]:
    """One VQLoC ``ClipMatcher`` / PRVQL ``ClipEncoder`` (``cab`` = ``"decoder"`` or ``"cross"``)."""
    yield f"{prefix}pe_3d", (1, frames * coarse * coarse, d)
    for i in range(grid.bit_length() - 1):  # log2(grid) query down heads, dead
        yield from _conv_bn(f"{prefix}query_down_heads.{i}", c, c)
    t = f"{prefix}CQ_corr_transformer.0"
    yield from _mha(f"{t}.self_attn", d)
    if cab == "decoder":
        yield from _mha(f"{t}.multihead_attn", d)
    yield from _linear(f"{t}.linear1", d, cab_ffn)
    yield from _linear(f"{t}.linear2", cab_ffn, d)
    for n in ("norm1", "norm2", "norm3") if cab == "decoder" else ("norm1", "norm2"):
        yield from _norm(f"{t}.{n}", d)
    for i in range(grid.bit_length() - 2):  # log2(grid) - 1 down heads, only those reaching `coarse` used
        yield from _conv_bn(f"{prefix}down_heads.{i}", d, d)
    for i in range(st_layers):
        t = f"{prefix}feat_corr_transformer.{i}"
        yield from _mha(f"{t}.self_attn", d)
        yield from _linear(f"{t}.linear1", d, st_ffn)
        yield from _linear(f"{t}.linear2", st_ffn, d)
        yield from _norm(f"{t}.norm1", d)
        yield from _norm(f"{t}.norm2", d)
    h = f"{prefix}head"
    yield f"{h}.up_convs.0.weight", (d, d, 4, 4)
    yield f"{h}.up_convs.0.bias", (d,)
    yield from _conv_bn(f"{h}.in_conv", d, 2 * d)
    for i in range(head_convs):
        yield from _conv_bn(f"{h}.regression_conv.{i}", d, d)
        yield from _conv_bn(f"{h}.classification_conv.{i}", d, d)
    yield f"{h}.regression_head.weight", (anchors * 4, d, 3, 3)
    yield f"{h}.regression_head.bias", (anchors * 4,)
    yield f"{h}.classification_head.weight", (anchors, d, 3, 3)
    yield f"{h}.classification_head.bias", (anchors,)


def backbone_shapes(c: int, depth: int, pos: int = 1370) -> Iterator[tuple[str, tuple[int, ...]]]:
    """DINOv2 ViT/14 in the official hub layout (``backbone.`` prefix), 37x37+1 positions."""
    yield "backbone.cls_token", (1, 1, c)
    yield "backbone.pos_embed", (1, pos, c)
    yield "backbone.mask_token", (1, c)
    yield "backbone.patch_embed.proj.weight", (c, 3, 14, 14)
    yield "backbone.patch_embed.proj.bias", (c,)
    for i in range(depth):
        b = f"backbone.blocks.{i}"
        yield from _norm(f"{b}.norm1", c)
        yield from _linear(f"{b}.attn.qkv", c, 3 * c)
        yield from _linear(f"{b}.attn.proj", c, c)
        yield f"{b}.ls1.gamma", (c,)
        yield from _norm(f"{b}.norm2", c)
        yield from _linear(f"{b}.mlp.fc1", c, 4 * c)
        yield from _linear(f"{b}.mlp.fc2", 4 * c, c)
        yield f"{b}.ls2.gamma", (c,)
    yield from _norm("backbone.norm", c)


def released_shapes(
    model: str = "prvql",
    cab: str = "cross",
    *,
    c: int = 768,
    depth: int = 12,
    d: int = 256,
    grid: int = 32,
    frames: int = 30,
    coarse: int = 8,
    cab_ffn: int = 1024,
    st_ffn: int = 2048,
    st_layers: int = 3,
    head_convs: int = 3,
    anchors: int = 12,
    bert_ffn: int = 256,
    top_n: int = 3,
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a released state dict (defaults: the published ViT-B/14 models)."""
    shapes = dict(backbone_shapes(c, depth))
    for conv, bn, cin in ((0, 1, c), (3, 4, d)):  # reduce = conv, BN, LeakyReLU, conv, BN, LeakyReLU
        shapes[f"reduce.{conv}.weight"], shapes[f"reduce.{conv}.bias"] = (d, cin, 3, 3), (d,)
        for part in BN:
            shapes[f"reduce.{bn}.{part}"] = () if part == "num_batches_tracked" else (d,)
    sizes = dict(
        c=c,
        d=d,
        grid=grid,
        frames=frames,
        coarse=coarse,
        cab=cab,
        cab_ffn=cab_ffn,
        st_ffn=st_ffn,
        st_layers=st_layers,
        head_convs=head_convs,
        anchors=anchors,
    )
    if model == "vqloc":
        shapes.update(stage_shapes("", **sizes))
        return shapes
    for prefix in ("clipencoderlayers.0.", "clipencoderlayers.1.", "last_clipencoderlayer."):
        shapes.update(stage_shapes(prefix, **sizes))
    for name in ("query", "key", "value"):
        shapes.update(_linear(f"ca.attention.self.{name}", d, d))
    shapes.update(_linear("ca.attention.output.dense", d, d))
    shapes.update(_norm("ca.attention.output.LayerNorm", d))
    shapes.update(_linear("ca.hidden_intermediate.dense", d, bert_ffn))
    shapes.update(_linear("ca.memory_intermediate.dense", d, bert_ffn))
    shapes.update(_linear("ca.output.dense", bert_ffn, d))
    shapes.update(_norm("ca.output.LayerNorm", d))
    shapes["topk_conv.conv.weight"] = (d, top_n * d, 3, 3)
    shapes["topk_conv.conv.bias"] = (d,)
    for part in BN:
        shapes[f"topk_conv.bn.{part}"] = () if part == "num_batches_tracked" else (d,)
    for mlp in ("s_mlp", "t_mlp", "ks_mlp"):
        shapes.update(_linear(f"{mlp}.fc1", grid * grid, grid * grid))
        shapes.update(_linear(f"{mlp}.fc2", grid * grid, grid * grid))
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, Tensor]:
    """Random tensors of those shapes with sane statistics: weights ~ N(0, 1/fan_in), norms ~ 1, BN variances
    in [0.5, 1.5], ``num_batches_tracked`` int64."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif (
            key.endswith(("norm1.weight", "norm2.weight", "norm3.weight", "norm.weight", "LayerNorm.weight"))
            or (key.endswith(".1.weight") and len(shape) == 1)
            or key.endswith("bn.weight")
        ):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) >= 2 and not key.endswith(("pos_embed", "pe_3d", "cls_token", "mask_token")):
            fan_in = int(torch.tensor(shape[1:]).prod())
            state[key] = torch.randn(shape, generator=g) / fan_in**0.5
        else:
            state[key] = 0.1 * torch.randn(shape, generator=g)
    return state


TINY = dict(
    c=384,
    depth=2,
    d=32,
    grid=8,
    frames=4,
    coarse=2,
    cab_ffn=64,
    st_ffn=64,
    st_layers=2,
    head_convs=1,
    bert_ffn=32,
    top_n=3,
)
"""Tiny widths: ViT-S/14 with 2 blocks at 112 px (8x8 grid), width 32, 4 frames of 2x2 tokens."""
