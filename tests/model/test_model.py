"""The PRVQL network on the tiny config: shapes, gradients, frozen backbone, attention masks and probes, switches."""

from __future__ import annotations

import pytest
import torch

from prvql.config import Config, load_config
from prvql.errors import ConfigError
from prvql.model import PRVQL, build_prvql
from prvql.model.cross_attention import CrossAttentionBlock
from prvql.model.layers import MultiHeadAttention
from prvql.model.temporal import MaskedSpatioTemporalAttention


def _tiny(*overrides: str) -> Config:
    return load_config("tiny", list(overrides))


def _inputs(cfg: Config, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    s, t = cfg.model.input_size, cfg.model.num_frames
    return torch.randn(batch, t, 3, s, s, generator=gen), torch.randn(batch, 3, s, s, generator=gen)


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_output_shapes_per_stage(stages):
    cfg = _tiny(f"model.num_stages={stages}")
    torch.manual_seed(0)
    model = build_prvql(cfg.model)
    frames, query = _inputs(cfg)
    out = model(frames, query)
    a = model.anchors.shape[0]
    t = cfg.model.num_frames
    assert a == 4 * 4 * 3 * 3  # 112 px / 14 = 8 -> 2 (two stride-2 convs) -> 4 (one transposed conv)
    assert out["anchors"].shape == (a, 4)
    assert len(out["stages"]) == stages == len(model.stages)
    for stage in out["stages"]:
        assert stage["boxes"].shape == (2, t, a, 4) and stage["logits"].shape == (2, t, a)
        assert torch.isfinite(stage["boxes"]).all() and torch.isfinite(stage["logits"]).all()
    assert out["boxes"] is out["stages"][-1]["boxes"] and out["logits"] is out["stages"][-1]["logits"]
    assert (model.akg is None) == (stages == 1) and (model.skg is None) == (stages == 1)


def _loss(out: dict) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    total = torch.zeros(())
    for stage in out["stages"]:
        total = total + (stage["boxes"] * torch.randn(stage["boxes"].shape, generator=gen)).sum()
        total = total + (stage["logits"] * torch.randn(stage["logits"].shape, generator=gen)).sum()
    return total


def test_gradients_reach_every_trainable_parameter_and_not_the_backbone():
    # tau = 0 keeps every AKG slot, so QFR's conv sees non-zero knowledge
    cfg = _tiny("model.akg.tau=0.0")
    torch.manual_seed(0)
    model = build_prvql(cfg.model)
    frames, query = _inputs(cfg)
    model.train()
    assert not model.backbone.training and all(not m.training for m in model.backbone.modules())
    assert model.stages[0].training
    assert all(not p.requires_grad for p in model.backbone.parameters())
    _loss(model(frames, query)).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for _, p in trainable)
    assert all(p.grad is None for p in model.backbone.parameters())
    # in eval mode (BN on running statistics) even conv biases before BN get a non-zero gradient
    model.zero_grad(set_to_none=True)
    model.eval()
    _loss(model(frames, query)).backward()
    no_grad = [n for n, p in trainable if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert not no_grad, no_grad
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)


def test_eval_forward_is_deterministic_and_matches_forward_features():
    cfg = _tiny()
    torch.manual_seed(0)
    model = build_prvql(cfg.model).eval()
    frames, query = _inputs(cfg)
    with torch.no_grad():
        first, second = model(frames, query), model(frames, query)
        b, t = frames.shape[:2]
        feats = model.extract_features(frames.flatten(0, 1))
        via_features = model.forward_features(feats.view(b, t, *feats.shape[1:]), model.extract_features(query))
    assert torch.equal(first["boxes"], second["boxes"]) and torch.equal(first["logits"], second["logits"])
    torch.testing.assert_close(via_features["logits"], first["logits"])
    assert feats.shape == (b * t, model.backbone.out_channels, 8, 8)
    assert not model.extract_features(query).requires_grad


def test_wrong_window_length_is_rejected():
    cfg = _tiny()
    model = build_prvql(cfg.model).eval()
    with pytest.raises(ValueError, match="model.num_frames"):
        model.forward_features(torch.zeros(1, 3, 384, 8, 8), torch.zeros(1, 384, 8, 8))


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.qfr.mode=add"],
        ["model.qfr.mode=concat"],
        ["model.akg.enabled=false"],
        ["model.skg.enabled=false"],
        ["model.akg.enabled=false", "model.skg.enabled=false"],
        ["model.vfr.base=initial"],
        ["model.akg.swap_roi_axes=true", "model.akg.tau=0.0"],
        ["model.cab.clip_self_attention=true"],
        ["model.skg.learned_mlp=false", "model.skg.alpha=0.3"],
        ["model.skg.temporal_source=received"],
        ["model.akg.top_n=1", "model.akg.roi_size=2", "model.num_stages=2"],
        ["model.backbone.name=dinov2_vits14_reg"],
    ],
)
def test_config_switches_build_and_run(overrides):
    cfg = _tiny(*overrides)
    torch.manual_seed(0)
    model = build_prvql(cfg.model)
    frames, query = _inputs(cfg, batch=1)
    out = model(frames, query)
    assert out["logits"].shape == (1, cfg.model.num_frames, model.anchors.shape[0])
    assert (model.akg is None) == (not cfg.model.akg.enabled) and (model.qfr is None) == (model.akg is None)
    assert (model.skg is None) == (not cfg.model.skg.enabled) and (model.vfr is None) == (model.skg is None)
    assert (model.stages[0].cab.self_attn is not None) == cfg.model.cab.clip_self_attention


def test_knowledge_switches_change_the_prediction():
    cfg = _tiny("model.akg.tau=0.0")
    frames, query = _inputs(cfg, batch=1)
    results = {}
    variants = {"full": [], "no_akg": ["model.akg.enabled=false"], "no_skg": ["model.skg.enabled=false"]}
    for name, extra in variants.items():
        torch.manual_seed(0)
        model = build_prvql(_tiny("model.akg.tau=0.0", *extra).model).eval()
        with torch.no_grad():
            results[name] = model(frames, query)
    for name in ("no_akg", "no_skg"):
        torch.testing.assert_close(results[name]["stages"][0]["logits"], results["full"]["stages"][0]["logits"])
        assert not torch.allclose(results[name]["logits"], results["full"]["logits"])


def test_beta_zero_makes_vfr_the_identity():
    """With beta = 0 and AKG off, stage 2 sees exactly stage 1's inputs: same architecture, same outputs."""
    cfg = _tiny("model.num_stages=2", "model.akg.enabled=false", "model.vfr.beta=0.0")
    torch.manual_seed(0)
    model = build_prvql(cfg.model).eval()
    model.stages[1].load_state_dict(model.stages[0].state_dict())
    frames, query = _inputs(cfg, batch=1)
    with torch.no_grad():
        out = model(frames, query)
    torch.testing.assert_close(out["stages"][1]["logits"], out["stages"][0]["logits"])


def test_config_errors():
    with pytest.raises(ConfigError, match="model.qfr.mode"):
        build_prvql(_tiny("model.qfr.mode=multiply").model)
    with pytest.raises(ConfigError, match="model.input_size"):
        build_prvql(_tiny("model.input_size=100").model)
    with pytest.raises(ConfigError, match="model.backbone.frozen"):
        build_prvql(_tiny("model.backbone.frozen=false").model)


def _temporal(layers: int, window: int, source: str = "center") -> MaskedSpatioTemporalAttention:
    torch.manual_seed(0)
    return MaskedSpatioTemporalAttention(
        dim=16,
        num_frames=7,
        height=3,
        width=3,
        num_layers=layers,
        num_heads=2,
        ffn_dim=32,
        window=window,
        source=source,
    ).eval()


@pytest.mark.parametrize(("layers", "window"), [(1, 1), (1, 2), (2, 1)])
def test_masked_attention_reach_is_layers_times_window(layers, window):
    module = _temporal(layers, window)
    x = torch.randn(2, 7, 16, 3, 3)
    perturbed = x.clone()
    perturbed[:, 6] += torch.randn(2, 16, 3, 3)
    with torch.no_grad():
        a, _ = module(x)
        b, _ = module(perturbed)
    reach = layers * window
    changed = [(a[:, f] - b[:, f]).abs().max().item() > 1e-6 for f in range(7)]
    assert changed == [f >= 6 - reach for f in range(7)]


def test_probe_equals_explicit_attention_probabilities():
    torch.manual_seed(0)
    attention = MultiHeadAttention(16, 4).eval()
    x, memory = torch.randn(2, 10, 16), torch.randn(2, 6, 16)
    probe = torch.randn(6, 3)
    mask = torch.rand(10, 6) > 0.3
    mask[:, 0] = True
    with torch.no_grad():
        plain, _ = attention(x, memory, mask=mask)
        out, probed = attention(x, memory, mask=mask, probe=probe)
        expected = attention.probabilities(x, memory, mask=mask) @ probe
        reference = torch.nn.functional.multi_head_attention_forward  # nn.MultiheadAttention's math
        ref, ref_weights = reference(
            x.transpose(0, 1),
            memory.transpose(0, 1),
            memory.transpose(0, 1),
            16,
            4,
            attention.in_proj_weight,
            attention.in_proj_bias,
            None,
            None,
            False,
            0.0,
            attention.out_proj.weight,
            attention.out_proj.bias,
            attn_mask=~mask,
        )
    torch.testing.assert_close(out, plain)
    torch.testing.assert_close(probed, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out, ref.transpose(0, 1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ref_weights @ probe, expected, atol=1e-5, rtol=1e-4)


def test_temporal_attention_map_is_attention_to_own_frame_centre():
    module = _temporal(2, 1)
    received = _temporal(2, 1, source="received")
    received.load_state_dict(module.state_dict())
    x = torch.randn(1, 7, 16, 3, 3)
    with torch.no_grad():
        out, centre = module(x, return_attention=True)
        out_r, got_received = received(x, return_attention=True)
        tokens = x.permute(0, 1, 3, 4, 2).reshape(1, 63, 16) + module.pos_embed
        tokens, _ = module.layers[0](tokens, module.mask)
        probs = module.layers[1].self_attn.probabilities(tokens, mask=module.mask).view(7, 9, 7, 9)
    assert centre.shape == (1, 7, 3, 3)
    for f in range(7):
        torch.testing.assert_close(centre[0, f].flatten(), probs[f, :, f, 4], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got_received[0, f].flatten(), probs[f, :, f, :].mean(0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out_r, out)


def test_cab_folds_frames_and_probes_the_query_centre():
    torch.manual_seed(0)
    cab = CrossAttentionBlock(16, 4, 32).eval()
    x, memory = torch.randn(2, 3, 5, 16), torch.randn(2, 9, 16)
    probe = torch.zeros(9, 1)
    probe[4] = 1.0
    with torch.no_grad():
        out, probed = cab(x, memory, probe)
        per_frame = [cab(x[:, f : f + 1], memory)[0] for f in range(3)]
        probs = cab.cross_attn.probabilities(x.reshape(2, 15, 16), memory)
    torch.testing.assert_close(out, torch.cat(per_frame, dim=1))
    torch.testing.assert_close(probed[..., 0], probs[..., 4].view(2, 3, 5), atol=1e-5, rtol=1e-4)


def test_bf16_autocast_forward_is_finite():
    cfg = _tiny()
    torch.manual_seed(0)
    model = build_prvql(cfg.model).eval()
    frames, query = _inputs(cfg, batch=1)
    with torch.no_grad():
        reference = model(frames, query)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(frames, query)
    assert all(torch.isfinite(s["boxes"]).all() and torch.isfinite(s["logits"]).all() for s in out["stages"])
    assert out["boxes"].dtype == out["logits"].dtype == torch.float32
    # boxes are decoded in float32: at initialisation (offsets ~1e-6) they match fp32 far below bf16's 1/256
    assert (out["boxes"] - reference["boxes"]).abs().max() < 1e-4


def test_model_is_a_prvql_with_separate_stage_weights():
    cfg = _tiny()
    model = build_prvql(cfg.model)
    assert isinstance(model, PRVQL)
    assert model.stages[0].cab.cross_attn.in_proj_weight is not model.stages[1].cab.cross_attn.in_proj_weight
    assert model.akg.top_n == cfg.model.akg.top_n and model.akg.tau == cfg.model.akg.tau
