"""AKG frame/box selection and RoIAlign sampling; SKG maps; QFR and VFR."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import roi_align

from prvql.model.knowledge import AppearanceKnowledgeGeneration, SpatialKnowledgeGeneration
from prvql.model.refinement import QueryFeatureRefinement, VideoFeatureRefinement

TAU = 0.7
ABOVE = math.log(TAU / (1 - TAU)) + 0.5  # a logit whose sigmoid passes tau
BELOW = math.log(TAU / (1 - TAU)) - 0.5


def _logits_and_boxes(best: list[list[float]], num_anchors: int = 4):
    """Frame-wise best logits at anchor (frame % num_anchors); others far lower; box of frame f = f/10 + ..."""
    b, t = len(best), len(best[0])
    logits = torch.full((b, t, num_anchors), -20.0)
    boxes = torch.rand(b, t, num_anchors, 4)
    for i in range(b):
        for f in range(t):
            logits[i, f, f % num_anchors] = best[i][f]
            boxes[i, f, f % num_anchors] = torch.tensor([f / 10, 0.1 + i / 10, f / 10 + 0.2, 0.4 + i / 10])
    return logits, boxes


def test_select_top_frames_threshold_and_boxes():
    akg = AppearanceKnowledgeGeneration(top_n=3, tau=TAU, roi_size=3)
    best = [
        [ABOVE, ABOVE + 2, BELOW, ABOVE + 1, ABOVE + 3],  # four pass: take frames 4, 1, 3
        [BELOW, BELOW - 1, ABOVE, BELOW - 2, BELOW + 0.2],  # one passes: frame 2, then 4 and 0 zeroed
        [BELOW - 3, BELOW, BELOW - 1, BELOW - 2, BELOW - 4],  # none pass
    ]
    logits, boxes = _logits_and_boxes(best)
    frames, chosen, keep = akg.select(logits, boxes)
    assert frames.tolist() == [[4, 1, 3], [2, 4, 0], [1, 2, 3]]
    assert keep.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    for i in range(3):
        for slot in range(3):
            f = frames[i, slot].item()
            torch.testing.assert_close(chosen[i, slot], boxes[i, f, f % 4])


def test_fewer_frames_than_slots_pad_with_zero_slots():
    akg = AppearanceKnowledgeGeneration(top_n=3, tau=TAU, roi_size=2)
    logits, boxes = _logits_and_boxes([[ABOVE, ABOVE + 1]])
    frames, _, keep = akg.select(logits, boxes)
    assert frames.shape == (1, 3) and keep.tolist() == [[True, True, False]]
    out = akg(logits, boxes, torch.ones(1, 2, 5, 8, 8))
    assert out.shape == (1, 3, 5, 2, 2)
    assert bool((out[0, :2] == 1).all()) and bool((out[0, 2] == 0).all())


def _marked_video():
    """[1, 2, 3, 8, 8] zeros; frame 1 holds 5.0 on columns 1..5, rows 3..7 (feature-grid cells)."""
    video = torch.zeros(1, 2, 3, 8, 8)
    video[0, 1, :, 3:8, 1:6] = 5.0
    return video


def test_roi_align_samples_the_box_of_the_chosen_frame():
    akg = AppearanceKnowledgeGeneration(top_n=1, tau=TAU, roi_size=3)
    logits, boxes = _logits_and_boxes([[BELOW, ABOVE]])
    boxes[0, 1, 1] = torch.tensor([2 / 8, 4 / 8, 4 / 8, 7 / 8])  # inside the marked region
    video = _marked_video()
    out = akg(logits, boxes, video)
    torch.testing.assert_close(out, torch.full((1, 1, 3, 3, 3), 5.0))
    # reversed corners and out-of-map coordinates are repaired: corners ordered, box clamped to the map
    boxes[0, 1, 1] = torch.tensor([4 / 8, 7 / 8, 2 / 8, 4 / 8])
    torch.testing.assert_close(akg(logits, boxes, video), out)
    boxes[0, 1, 1] = torch.tensor([-0.5, -0.5, 2.0, 2.0])
    full = akg(logits, boxes, video)
    whole = torch.tensor([[0.0, 0.0, 0.0, 8.0, 8.0]])
    expected = roi_align(video[0, 1:2], whole, 3, 1.0, -1, False)
    torch.testing.assert_close(full[0], expected)


def test_swapped_axes_reproduce_the_released_transposition():
    logits, boxes = _logits_and_boxes([[BELOW, ABOVE]])
    boxes[0, 1, 1] = torch.tensor([2 / 8, 4 / 8, 4 / 8, 7 / 8])
    video = _marked_video()
    correct = AppearanceKnowledgeGeneration(top_n=1, tau=TAU, roi_size=3)(logits, boxes, video)
    swapped = AppearanceKnowledgeGeneration(top_n=1, tau=TAU, roi_size=3, swap_roi_axes=True)
    assert not torch.allclose(swapped(logits, boxes, video), correct)
    torch.testing.assert_close(swapped(logits, boxes, video.transpose(-1, -2)), correct.transpose(-1, -2))


def test_gradient_reaches_video_features_through_roi_align():
    akg = AppearanceKnowledgeGeneration(top_n=2, tau=TAU, roi_size=2)
    logits, boxes = _logits_and_boxes([[ABOVE, BELOW, ABOVE + 1]])
    video = torch.randn(1, 3, 4, 6, 6, requires_grad=True)
    akg(logits, boxes, video).sum().backward()
    assert video.grad[0, 1].abs().sum() == 0  # frame 1 was not chosen
    assert video.grad[0, 0].abs().sum() > 0 and video.grad[0, 2].abs().sum() > 0


def test_skg_without_mlp_mixes_maps_by_alpha():
    b, t, h, w = 2, 3, 4, 4
    cross = torch.rand(b, t, h * w)
    temporal = torch.rand(b, t, 2, 2)
    skg = SpatialKnowledgeGeneration(h, w, alpha=0.5, learned_mlp=False)
    out = skg(cross, temporal)
    assert out.shape == (b, t, h, w)
    torch.testing.assert_close(out.mean(dim=(-1, -2)), torch.ones(b, t))  # HW * softmax averages to 1
    only_t = SpatialKnowledgeGeneration(h, w, alpha=1.0, learned_mlp=False)
    torch.testing.assert_close(only_t(cross, temporal), only_t(torch.rand_like(cross), temporal))
    only_s = SpatialKnowledgeGeneration(h, w, alpha=0.0, learned_mlp=False)
    expected = (h * w) * cross.softmax(-1).view(b, t, h, w)
    torch.testing.assert_close(only_s(cross, torch.rand_like(temporal)), expected)


def test_skg_with_mlps_has_three_shared_mlps():
    skg = SpatialKnowledgeGeneration(4, 4, alpha=0.5, learned_mlp=True)
    assert {name.split(".")[0] for name, _ in skg.named_parameters()} == {"s_mlp", "t_mlp", "ks_mlp"}
    assert skg.s_mlp[0].weight.shape == (16, 16)
    assert skg(torch.rand(1, 2, 16), torch.rand(1, 2, 2, 2)).shape == (1, 2, 4, 4)


def test_vfr_beta_zero_is_identity_and_base_choice():
    current, initial = torch.randn(1, 2, 3, 4, 4), torch.randn(1, 2, 3, 4, 4)
    knowledge = torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(VideoFeatureRefinement(0.0)(current, initial, knowledge), current)
    torch.testing.assert_close(VideoFeatureRefinement(0.0, "initial")(current, initial, knowledge), initial)
    out = VideoFeatureRefinement(0.1)(current, initial, knowledge)
    torch.testing.assert_close(out, 0.1 * knowledge[:, :, None] * current + 0.9 * current)


@pytest.mark.parametrize("mode", ["cross_attention", "add", "concat"])
def test_qfr_modes_keep_shape_and_use_knowledge(mode):
    torch.manual_seed(0)
    qfr = QueryFeatureRefinement(dim=8, top_n=2, mode=mode, num_heads=2, ffn_dim=16, dropout=0.1).eval()
    query = torch.randn(2, 8, 4, 4)
    knowledge = torch.randn(2, 2, 8, 3, 3)
    out = qfr(query, knowledge)
    assert out.shape == query.shape
    assert not torch.allclose(out, qfr(query, torch.randn_like(knowledge)))
