"""Inference speed-ups compute the same function: BN folding and channels-last convs, banded temporal attention
(bands as views over the batch), embeddings shared across windows and queries, intermediate stages decoding boxes
only for AKG's frames (classification half of the head's first conv for the others), attention probes read from
the softmax normaliser, and the last stage regressing each frame's best anchor only: the largest difference is at
most 1e-6 of the outputs' scale (float32 rounding: ~8 ulps), on outputs made large enough (std > 0.3) to show
any real change."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from prvql.config import Config
from prvql.model import build_prvql
from prvql.model.head import AnchorHead, top_boxes
from prvql.model.layers import ConvBNAct, MultiHeadAttention
from prvql.model.temporal import MaskedSpatioTemporalAttention, temporal_mask

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


def test_fused_model_stores_its_stage_convs_channels_last(reference: tuple) -> None:
    """fuse_for_inference keeps the stages' and QFR's convs in channels-last (outputs: the parametrised test)."""
    model = copy.deepcopy(reference[0]).fuse_for_inference()
    convs = [m for part in (*model.stages, model.qfr) for m in part.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


@pytest.mark.parametrize("masked", [False, True])
def test_probes_read_from_the_softmax_normaliser_equal_explicit_probabilities(masked: bool, monkeypatch) -> None:
    """Key-index probes without gradients on the CPU take the fused kernel's normaliser; with a gradient, or
    switched off, the padded-values path: both equal the explicit probabilities, and the outputs are unchanged."""
    torch.manual_seed(0)
    attention = MultiHeadAttention(16, 4).eval()
    x, memory = torch.randn(2, 10, 16), torch.randn(2, 7, 16)
    mask = torch.rand(10, 7) > 0.4 if masked else None
    if masked:
        mask[:, 0] = True
        mask[3, 5] = False  # a probed key hidden from one query: probability 0
    keys = torch.tensor([5, 2])
    calls = []
    normaliser = MultiHeadAttention._attend_normaliser
    spy = staticmethod(lambda *args: calls.append(1) or normaliser(*args))
    monkeypatch.setattr(MultiHeadAttention, "_attend_normaliser", spy)
    expected = attention.probabilities(x, memory, mask=mask)[..., keys]
    with torch.no_grad():
        plain, _ = attention(x, memory, mask=mask)
        out, probed = attention(x, memory, mask=mask, probe=keys)
        attention.normaliser_probe = False
        padded_out, padded = attention(x, memory, mask=mask, probe=keys)
        attention.normaliser_probe = True
    assert len(calls) == 1  # the first probed call only
    _, with_grad = attention(x, memory, mask=mask, probe=keys)
    assert len(calls) == 1 and with_grad.requires_grad
    if masked:
        assert expected[:, 3, 0].abs().max() == 0 and probed[:, 3, 0].abs().max() == 0
    for got in (probed, padded, with_grad.detach()):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out, plain, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(padded_out, plain, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("probe", [None, "matrix", "keys"])
def test_banded_attention_equals_masked_attention_with_other_windows_in_the_batch(probe: str | None) -> None:
    """The bands are views over all windows' frames laid end to end; the mask hides the neighbouring windows'
    frames (here huge), so a batch gives every window the masked full attention it gets alone."""
    torch.manual_seed(0)
    t, n, window = 6, 4, 1
    attention = MultiHeadAttention(8, 2).eval()
    x = torch.randn(3, t * n, 8)
    x[1] *= 1e3  # the middle window's neighbours must not see it
    span = torch.arange(-window, window + 1).repeat_interleave(n)
    frames = torch.arange(t)
    band_mask = ((frames[:, None] + span >= 0) & (frames[:, None] + span < t))[:, None]
    centre = window * n + 2  # token 2 of the frame itself
    probes = {None: None, "matrix": torch.eye((2 * window + 1) * n)[:, [centre]], "keys": torch.tensor([centre])}
    with torch.no_grad():
        out, probed = attention.banded(x, t, window, band_mask, probes[probe])
        for i in range(3):
            alone, _ = attention(x[i : i + 1], mask=temporal_mask(t, n, window))
            torch.testing.assert_close(out[i : i + 1], alone, atol=1e-4 * x[i].abs().max().item(), rtol=1e-5)
    if probe is not None:
        full = attention.probabilities(x, mask=temporal_mask(t, n, window)).view(3, t, n, t, n)
        expected = torch.stack([full[:, f, :, f, 2] for f in range(t)], dim=1).reshape(3, t * n, 1)
        torch.testing.assert_close(probed, expected, atol=1e-6, rtol=1e-5)


def _eval_head(grid_cells: int = 8) -> tuple[AnchorHead, torch.Tensor]:
    """An eval-mode head with trained-looking batch norms and visible outputs, and its ``[5, 16, g, g]`` input."""
    torch.manual_seed(0)
    head = AnchorHead(16, 3, 1, 2, 0.2).eval()
    for module in head.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-1.0, 1.0)
    torch.nn.init.normal_(head.reg_out.weight, std=0.3)
    return head, torch.randn(5, 16, grid_cells, grid_cells)


@pytest.mark.parametrize("fused", [False, True])
def test_head_halves_and_single_cells_equal_the_full_head(fused: bool) -> None:
    """The classification half alone, the regression half from the upsampled features, and the regression of
    single cells (every cell of a 16x16 map, borders included) give the full head's numbers."""
    head, x = _eval_head()
    if fused:
        for module in head.modules():
            if isinstance(module, ConvBNAct):
                module.fuse_batch_norm()
    with torch.no_grad():
        reg, cls = head.trunk(x)
        offsets = head.regress(reg).view(5, 16, 16, 3, 4)
        up, cls_half = head.classification_trunk(x)
        torch.testing.assert_close(cls_half, cls, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(head.regression_trunk(up), reg, atol=1e-6, rtol=1e-5)
        assert offsets.std() > 0.3
        for row, col in itertools.product(range(16), range(16)):
            rows, cols = torch.full((5,), row), torch.arange(5) * 3 + col % 4  # mixed cells in one call
            got = head.regress_cells(up, rows, cols)
            torch.testing.assert_close(got, offsets[torch.arange(5), rows, cols], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stage_mean", [False, True])
def test_top_anchor_outputs_equal_top_boxes_of_the_full_outputs(reference: tuple, stage_mean: bool) -> None:
    """forward_embedded(top=True) regresses each frame's best anchor only: the same scores and boxes as
    top_boxes of the full last stage (fused or not)."""
    model, frames, query, _ = reference
    b, t = frames.shape[:2]
    for fused in (False, True):
        tested = copy.deepcopy(model).fuse_for_inference() if fused else model
        with torch.no_grad():
            video = tested.embed(frames.flatten(0, 1)).view(b, t, -1, *tested.embed(query).shape[-2:])
            full = tested.forward_embedded(video, tested.embed(query), stage_mean=stage_mean)
            top = tested.forward_embedded(video, tested.embed(query), stage_mean=stage_mean, top=True)
        scores, boxes = top_boxes(full["logits"], full["boxes"])
        assert "boxes" not in top and boxes.std() > 0.3
        torch.testing.assert_close(top["top_logits"], scores, atol=0, rtol=0)
        torch.testing.assert_close(top["top_boxes"], boxes, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(top["logits"], full["logits"], atol=0, rtol=0)


def test_output_channels_is_a_slice_of_the_conv_block() -> None:
    torch.manual_seed(0)
    block = ConvBNAct(4, 6).eval()
    block[1].running_mean.uniform_(-0.5, 0.5)
    block[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        full = block(x)
        torch.testing.assert_close(block.output_channels(x, 2, 5), full[:, 2:5])
        torch.testing.assert_close(block.output_channels(x, padding=0), full[..., 1:-1, 1:-1])
    with pytest.raises(ValueError, match="batch norm"):
        ConvBNAct(4, 6, norm_groups=2).eval().output_channels(x, 0, 3)
