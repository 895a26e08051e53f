"""The authors' checkpoints: detection, key mapping, ``prvql convert``, ``prvql.load_model`` and the refusals.

Checkpoints are built here from the key/shape tables (:mod:`prvql.model.released_layout`) with tiny widths; the layers
the released code builds from ``torch.nn`` (decoder/encoder layers, multi-head attention) are run on the released
tensors to check that each mapped module computes what the released one does.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.ops import roi_align

import prvql
from prvql.cli import main
from prvql.errors import CheckpointError
from prvql.model.released_layout import TINY, random_state, released_shapes
from prvql.model.released_weights import detect, load_released, read_released

# (model, CAB layout, wrapped in a training checkpoint, "module." prefix): every layout and container variant
CASES = [
    ("vqloc", "decoder", True, False),
    ("vqloc", "cross", False, True),
    ("prvql", "cross", True, True),
    ("prvql", "decoder", False, False),
]


def released_file(tmp_path: Path, model: str, cab: str, wrapped: bool = True, prefix: bool = False, **edit) -> Path:
    state = random_state(released_shapes(model, cab, **TINY))
    if prefix:
        state = {f"module.{k}": v for k, v in state.items()}
    payload = {"epoch": 7, "state_dict": state, "optimizer": {"state": {}}, "best_prob": 0.61} if wrapped else state
    path = tmp_path / f"{model}_{cab}.pth.tar"
    torch.save(payload, path)
    return path


def features(cfg, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    grid, c = cfg.model.input_size // 14, 384
    return torch.randn(1, cfg.model.num_frames, c, grid, grid, generator=g), torch.randn(1, c, grid, grid, generator=g)


@pytest.mark.parametrize(("model", "cab", "wrapped", "prefix"), CASES)
def test_convert_detects_and_round_trips(tmp_path, capsys, model, cab, wrapped, prefix):
    src = released_file(tmp_path, model, cab, wrapped, prefix)
    out = tmp_path / "converted.safetensors"
    assert main(["convert", "--checkpoint", str(src), "--output", str(out)]) == 0
    summary = capsys.readouterr().out.splitlines()[0]
    stages = 1 if model == "vqloc" else 3
    assert f"{model.upper()}, {stages} stage(s)" in summary
    assert ("decoder" in summary) == (cab == "decoder")
    assert "backbone dinov2_vits14 (depth 2)" in summary and "query_down_heads" in summary
    assert f"preset {'vqloc_vitb14' if model == 'vqloc' else 'prvql_released'}" in summary

    cfg, converted = prvql.load_model(out)  # self-contained: no backbone file anywhere
    cfg_direct, direct = prvql.load_model(src)
    assert cfg == cfg_direct
    assert cfg.model.num_stages == stages and cfg.model.cab.clip_self_attention == (cab == "decoder")
    assert cfg.model.backbone.weights is None and cfg.model.num_frames == TINY["frames"]
    assert cfg.data.released_preprocessing and not cfg.inference.reach_ends
    assert not converted.training
    assert not any(t.is_meta for t in [*converted.parameters(), *converted.buffers()])  # meta backbone got the file's
    frames, query = features(cfg)
    with torch.no_grad():
        a, b = converted.forward_features(frames, query), direct.forward_features(frames, query)
    assert len(a["stages"]) == stages
    for sa, sb in zip(a["stages"], b["stages"], strict=True):
        assert torch.equal(sa["logits"], sb["logits"]) and torch.equal(sa["boxes"], sb["boxes"])
    assert a["logits"].std() > 1e-2  # the random weights give varied outputs, so equality means something
    images = torch.randn(1, 3, cfg.model.input_size, cfg.model.input_size)
    with torch.no_grad():
        assert torch.equal(converted.extract_features(images), direct.extract_features(images))


def test_detect_backbone_sizes_and_full_depth():
    for width, size in ((384, "s"), (768, "b"), (1024, "l"), (1536, "g")):
        keys = {"pe_3d": torch.zeros(1), "backbone.cls_token": torch.zeros(1, 1, width)}
        depth = {"s": 12, "b": 12, "l": 24, "g": 40}[size]
        keys.update({f"backbone.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(depth)})
        det = detect(keys, "x.pth")
        assert det.backbone == f"dinov2_vit{size}14" and det.backbone_depth is None and det.model == "vqloc"
    keys["backbone.register_tokens"] = torch.zeros(1, 4, 1536)
    assert detect(keys, "x.pth").backbone == "dinov2_vitg14_reg"


def _stage_state(state: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


@pytest.mark.parametrize("cab", ["decoder", "cross"])
def test_mapped_modules_compute_what_the_released_layers_compute(tmp_path, cab):
    """CAB (both layouts), spatio-temporal encoder layer and the BERT cross layer of QFR, against torch.nn layers
    (or the BERT formula) loaded with the released tensors."""
    src = released_file(tmp_path, "prvql", cab)
    state = read_released(src)
    conv = load_released(src, state=state)
    stage = conv.model.stages[1]
    d, g = TINY["d"], torch.Generator().manual_seed(3)
    t, n, m = 2, 9, 16
    x, memory = torch.randn(1, t, n, d, generator=g), torch.randn(1, m, d, generator=g)
    cab_state = _stage_state(state, "clipencoderlayers.1.CQ_corr_transformer.0.")
    if cab == "decoder":
        ref = nn.TransformerDecoderLayer(d, 4, TINY["cab_ffn"], 0.0, "gelu", batch_first=True)
        ref.load_state_dict(cab_state)
        expected = ref.eval()(x[0], memory.expand(t, -1, -1))
    else:
        attn = nn.MultiheadAttention(d, 4, batch_first=True)
        attn.load_state_dict(_stage_state(cab_state, "self_attn."))
        norm1, norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        norm1.load_state_dict(_stage_state(cab_state, "norm1."))
        norm2.load_state_dict(_stage_state(cab_state, "norm2."))
        lin1, lin2 = nn.Linear(d, TINY["cab_ffn"]), nn.Linear(TINY["cab_ffn"], d)
        lin1.load_state_dict(_stage_state(cab_state, "linear1."))
        lin2.load_state_dict(_stage_state(cab_state, "linear2."))
        q = memory.expand(t, -1, -1)
        h = norm1(x[0] + attn(x[0], q, q, need_weights=False)[0])
        expected = norm2(h + lin2(F.gelu(lin1(h))))
    with torch.no_grad():
        got, _ = stage.cab(x, memory)
    torch.testing.assert_close(got[0], expected, atol=1e-5, rtol=1e-5)

    enc = nn.TransformerEncoderLayer(d, 8, TINY["st_ffn"], 0.0, "gelu", batch_first=True)
    enc.load_state_dict(_stage_state(state, "clipencoderlayers.1.feat_corr_transformer.1."))
    tokens = torch.randn(1, 12, d, generator=g)
    mask = torch.ones(12, 12, dtype=torch.bool)
    with torch.no_grad():
        got, _ = stage.temporal.layers[1](tokens, mask)
        expected = enc.eval()(tokens)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    # QFR's CAB = the released BertLayer_Cross: 8 heads, LN eps 1e-12, GELU intermediate
    q, kv = torch.randn(1, 10, d, generator=g), torch.randn(1, 5, d, generator=g)

    def lin(name, v):
        return F.linear(v, state[f"ca.{name}.weight"], state[f"ca.{name}.bias"])

    def heads(v):
        return v.view(1, -1, 8, d // 8).transpose(1, 2)

    scores = heads(lin("attention.self.query", q)) @ heads(lin("attention.self.key", kv)).transpose(-1, -2)
    ctx = (scores / math.sqrt(d // 8)).softmax(-1) @ heads(lin("attention.self.value", kv))
    ctx = ctx.transpose(1, 2).reshape(1, -1, d)

    def ln(name, v):
        return F.layer_norm(v, (d,), state[f"ca.{name}.weight"], state[f"ca.{name}.bias"], eps=1e-12)

    a = ln("attention.output.LayerNorm", lin("attention.output.dense", ctx) + q)
    expected = ln("output.LayerNorm", lin("output.dense", F.gelu(lin("hidden_intermediate.dense", a))) + a)
    with torch.no_grad():
        got, _ = conv.model.qfr.cab(q[:, None], kv)
    torch.testing.assert_close(got[:, 0], expected, atol=1e-5, rtol=1e-5)


def test_regression_channels_are_reordered_to_our_box_order(tmp_path):
    """Released offsets are (cy, cx, h, w) per anchor: a bias on the released 'cx' channel of anchor 0 must move
    our decoded box along x only."""
    src = released_file(tmp_path, "vqloc", "decoder")
    state = read_released(src)
    for key in ("head.regression_head.weight", "head.regression_head.bias"):
        state[key] = torch.zeros_like(state[key])
    state["head.regression_head.bias"][1] = 0.25  # anchor 0, released channel 1 = cx
    conv = load_released(src, state=state)
    frames, query = features(conv.cfg)
    with torch.no_grad():
        out = conv.model.forward_features(frames, query)
    shift = out["boxes"][0, 0, 0] - conv.model.anchors[0]
    torch.testing.assert_close(shift, torch.tensor([0.25, 0.0, 0.25, 0.0]), atol=1e-6, rtol=0)


def test_backbone_conversion_equals_our_dinov2_path(tmp_path):
    """The backbone taken from the checkpoint (hub layout) computes what our DINOv2 loader makes of the same
    tensors saved as an official DINOv2 file, including the 37x37 -> 8x8 position-embedding resampling."""
    from prvql.config import BackboneConfig
    from prvql.model.backbone import build_backbone

    src = released_file(tmp_path, "prvql", "cross")
    state = read_released(src)
    official = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}, official)
    ours = build_backbone(BackboneConfig(name="dinov2_vits14", weights=str(official), depth=2)).eval()
    conv = load_released(src, state=state)
    images = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(conv.model.extract_features(images), ours(images))
    assert conv.model.backbone.vit.pos_embed.shape[1] == 37 * 37 + 1


def _refused(tmp_path, capsys, src: Path) -> str:
    out = tmp_path / "out.safetensors"
    assert main(["convert", "--checkpoint", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(src) in err[0], err
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))
    return err[0]


class Payload:  # a class that only unpickles by running code
    pass


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s.update({"extra_head.weight": torch.zeros(3)}), "extra_head.weight"),
        (lambda s: s.pop("reduce.1.running_var"), "reduce.1.running_var"),
        (lambda s: s.pop("ca.attention.self.key.bias"), "ca.attention.self.key.bias"),
        (lambda s: s.update({"head.classification_head.bias": torch.zeros(13)}), "head.classification_head.bias"),
        (lambda s: s.update({"backbone.norm.weight": torch.zeros(7)}), "backbone.norm.weight"),
    ],
)
def test_refuses_unknown_missing_and_misshaped_keys(tmp_path, capsys, edit, expected):
    model = "prvql" if expected.startswith("ca.") else "vqloc"
    state = random_state(released_shapes(model, "decoder", **TINY))
    edit(state)
    src = tmp_path / "edited.pth"
    torch.save({"state_dict": state}, src)
    assert expected in _refused(tmp_path, capsys, src)


def test_refuses_pickled_code_and_truncated_files(tmp_path, capsys):
    src = tmp_path / "code.pth"
    torch.save({"state_dict": {"reduce.0.weight": torch.zeros(1)}, "args": Payload()}, src)
    assert "needs code to unpickle" in _refused(tmp_path, capsys, src)
    good = released_file(tmp_path, "vqloc", "decoder")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "truncated or corrupt" in _refused(tmp_path, capsys, cut)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(2)}}, other)
    assert "not a VQLoC or PRVQL checkpoint" in _refused(tmp_path, capsys, other)
    with pytest.raises(CheckpointError, match="cut.pth"):
        prvql.load_model(cut)


def test_overrides_and_config_reach_the_converted_model(tmp_path):
    src = released_file(tmp_path, "prvql", "cross")
    cfg, model = prvql.load_model(src, config="prvql_released")
    assert cfg.model.akg.swap_roi_axes and not cfg.model.akg.clamp_boxes
    conv = load_released(src, overrides=["inference.windows_per_batch=7", "model.akg.tau=0.5"])
    assert conv.cfg.inference.windows_per_batch == 7 and conv.model.akg.tau == 0.5


def test_akg_released_boxes_go_to_roi_align_unclamped_unsorted_and_swapped():
    from prvql.model.knowledge import AppearanceKnowledgeGeneration

    akg = AppearanceKnowledgeGeneration(top_n=1, tau=0.0, roi_size=3, swap_roi_axes=True, clamp_boxes=False)
    video = torch.randn(1, 2, 4, 8, 8)
    logits = torch.zeros(1, 2, 3)
    logits[0, 1, 2] = 5.0
    boxes = torch.rand(1, 2, 3, 4)
    boxes[0, 1, 2] = torch.tensor([0.9, -0.2, 0.3, 1.3])  # x1 > x2, outside the map
    got = akg(logits, boxes, video)
    y1x1y2x2 = torch.tensor([[1.0, -0.2 * 8, 0.9 * 8, 1.3 * 8, 0.3 * 8]])  # frame 1, (y1, x1, y2, x2) * 8
    expected = roi_align(video.flatten(0, 1), y1x1y2x2, 3, spatial_scale=1.0, sampling_ratio=-1)
    torch.testing.assert_close(got[0], expected)


def test_released_preprocessing_pads_then_resizes_without_antialias():
    from prvql.data.transforms import IMAGENET_MEAN, IMAGENET_STD, prepare_frames, prepare_query

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (45, 80, 3), dtype=np.uint8)  # odd difference: 17 + 45 + 17 = 79 rows
    got = prepare_frames(frame[None], 56, 0.5, released=True)
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    x = torch.cat([torch.full((1, 3, 17, 80), 0.5), x, torch.full((1, 3, 17, 80), 0.5)], dim=2)
    expected = F.interpolate(x, size=(56, 56), mode="bilinear", align_corners=False)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(got, (expected - mean) / std)
    assert not torch.allclose(got, prepare_frames(frame[None], 56, 0.5))  # the default path is antialiased

    query = prepare_query(frame, (70.0, 5.0, 79.0, 25.0), 28, released=True)
    # square of side 20 about (74.5, 15), clipped to x <= W - 1 = 79: (64.5, 5, 79, 25), PIL rounds the corners
    crop = Image.fromarray(frame).crop((64, 5, 79, 25)).resize((28, 28), Image.BICUBIC)
    expected = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255).permute(2, 0, 1)
    torch.testing.assert_close(query, (expected - mean) / std)


def test_locate_takes_the_authors_file(tmp_path):
    """``--weights`` of the inference commands takes the authors' .pth directly (the converted file's equivalence is
    :func:`test_convert_detects_and_round_trips`)."""
    import json

    from prvql.data.video import write_video

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (20, 8, 12, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)  # 20 frames, 64 x 96
    for i, frame in enumerate(frames):
        frame[20:40, 10 + 2 * i : 30 + 2 * i] = 255
    clip = tmp_path / "walk.mp4"
    write_video(clip, frames, fps=10.0)
    src = released_file(tmp_path, "prvql", "cross")
    args = ["locate", "--video", str(clip), "--query-frame", "15", "--query-box", "50,20,20,20", "--device", "cpu"]
    assert main([*args, "--weights", str(src), "--output", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "track.json").read_text())
    assert len(report["curve"]) == 8 and len({c["score"] for c in report["curve"]}) > 1
