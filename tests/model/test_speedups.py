"""Inference speed-ups compute the same function: BN folding, banded temporal attention, embeddings shared across
windows and queries, and intermediate stages decoding boxes only for AKG's frames: the largest difference is at
most 1e-6 of the outputs' scale (float32 rounding: ~8 ulps), on outputs made large enough (std > 0.3) to show
any real change."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from prvql.config import Config
from prvql.model import build_prvql
from prvql.model.head import AnchorHead
from prvql.model.temporal import MaskedSpatioTemporalAttention

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def reference() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, dict]:
    """A tiny model whose AKG keeps every slot (tau 0), with trained-looking BN statistics and head outputs, its
    inputs, and its outputs computed the plain way (full masked attention, unfused, forward_features)."""
    from prvql.config import load_config

    cfg: Config = load_config("tiny", ["model.akg.tau=0.0"])
    torch.manual_seed(0)
    model = build_prvql(cfg.model).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
        if isinstance(module, AnchorHead):
            for conv in (module.cls_out, module.reg_out):
                torch.nn.init.normal_(conv.weight, std=0.3)
        if isinstance(module, MaskedSpatioTemporalAttention):
            module.pos_embed.data.normal_(std=0.5)
            module.banded = False
    t, size = cfg.model.num_frames, cfg.model.input_size
    frames = torch.randn(2, t, 3, size, size)
    query = torch.randn(2, 3, size, size)
    with torch.no_grad():
        feats = model.extract_features(frames.flatten(0, 1))
        out = model.forward_features(feats.view(2, t, *feats.shape[1:]), model.extract_features(query))
    return model, frames, query, out


def _largest_difference(a: dict, b: dict) -> float:
    """Largest absolute difference of logits and boxes, relative to the outputs' scale (at least 1)."""
    return max((a[k] - b[k]).abs().max().item() / max(1.0, b[k].abs().max().item()) for k in ("logits", "boxes"))


@pytest.mark.parametrize(("fused", "banded", "embedded"), list(itertools.product((False, True), repeat=3)))
def test_speedups_give_the_same_outputs(reference: tuple, fused: bool, banded: bool, embedded: bool) -> None:
    plain, frames, query, expected = reference
    model = copy.deepcopy(plain)
    if fused:
        model.fuse_for_inference()
    for module in model.modules():
        if isinstance(module, MaskedSpatioTemporalAttention):
            module.banded = banded
    b, t = frames.shape[:2]
    with torch.no_grad():
        if embedded:
            video = model.embed(frames.flatten(0, 1))
            out = model.forward_embedded(video.view(b, t, *video.shape[1:]), model.embed(query))
        else:
            feats = model.extract_features(frames.flatten(0, 1))
            out = model.forward_features(feats.view(b, t, *feats.shape[1:]), model.extract_features(query))
    assert expected["logits"].std() > 0.3 and expected["boxes"].std() > 0.3  # outputs that can differ
    assert _largest_difference(out, expected) <= TOLERANCE


def test_intermediate_stages_decode_boxes_only_for_akg_frames(reference: tuple, monkeypatch) -> None:
    """forward_embedded runs the regression branch of stages 1..K-1 on top_n frames per window, not on all T."""
    model, frames, query, _ = reference
    model = copy.deepcopy(model)
    b, t = frames.shape[:2]
    seen = []
    for index, stage in enumerate(model.stages):
        regress = stage.head.regress

        def spy(reg: torch.Tensor, index: int = index, regress=regress) -> torch.Tensor:
            seen.append((index, reg.shape[0]))
            return regress(reg)

        monkeypatch.setattr(stage.head, "regress", spy)
    with torch.no_grad():
        video = model.embed(frames.flatten(0, 1))
        model.forward_embedded(video.view(b, t, *video.shape[1:]), model.embed(query))
    top_n, last = model.akg.top_n, len(model.stages) - 1
    assert seen == [(k, b * top_n) for k in range(last)] + [(last, b * t)]


def test_fused_model_has_no_batch_norm_and_refuses_training(reference: tuple) -> None:
    model = copy.deepcopy(reference[0]).fuse_for_inference()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with pytest.raises(RuntimeError, match="cannot be trained"):
        model.train()


def test_stage_mean_reads_the_stages_of_the_full_forward(reference: tuple) -> None:
    """``stage_mean`` averages the stages' anchor logits of the training forward and keeps the last stage's boxes."""
    model, frames, query, expected = reference
    b, t = frames.shape[:2]
    stages = expected["stages"]
    assert len(stages) == len(model.stages) >= 2
    with torch.no_grad():
        video = model.embed(frames.flatten(0, 1)).view(b, t, -1, *model.embed(query).shape[-2:])
        mean = model.forward_embedded(video, model.embed(query), stage_mean=True)
    averaged = {"logits": torch.stack([s["logits"] for s in stages]).mean(0), "boxes": stages[-1]["boxes"]}
    assert _largest_difference(mean, averaged) <= TOLERANCE
    assert (stages[0]["logits"] - stages[-1]["logits"]).abs().max() > 0.1  # the stages really differ
