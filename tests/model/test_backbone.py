"""DINOv2 backbone: parity with HF transformers' Dinov2Model, the official resampling, weight layouts, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from prvql.config import BackboneConfig
from prvql.errors import CheckpointError, ConfigError
from prvql.model.backbone import DINOv2Backbone, build_backbone, interpolate_pos_embed

transformers = pytest.importorskip("transformers")

DEPTH = 2


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values everywhere (timm initialises layer scales to 1e-5 and biases to 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))


def _timm_to_hf(state: dict[str, torch.Tensor], old_names: bool) -> dict[str, torch.Tensor]:
    """Test-side conversion timm -> HF names (written independently of prvql.model.dinov2_weights)."""
    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.mask_token": torch.zeros(1, state["cls_token"].shape[-1]),
        "embeddings.position_embeddings": state["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
    }
    q, k, v = ("attention.attention.query", "attention.attention.key", "attention.attention.value")
    if not old_names:
        q, k, v = ("attention.q_proj", "attention.k_proj", "attention.v_proj")
    proj = "attention.output.dense" if old_names else "attention.o_proj"
    for i in range(DEPTH):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            for name, part in zip((q, k, v), state[f"{src}attn.qkv.{kind}"].chunk(3), strict=True):
                out[f"{dst}{name}.{kind}"] = part
            out[f"{dst}{proj}.{kind}"] = state[f"{src}attn.proj.{kind}"]
            for norm in ("norm1", "norm2"):
                out[f"{dst}{norm}.{kind}"] = state[f"{src}{norm}.{kind}"]
            for fc in ("fc1", "fc2"):
                out[f"{dst}mlp.{fc}.{kind}"] = state[f"{src}mlp.{fc}.{kind}"]
        out[f"{dst}layer_scale1.lambda1"] = state[f"{src}ls1.gamma"]
        out[f"{dst}layer_scale2.lambda1"] = state[f"{src}ls2.gamma"]
    return out


def _official_interpolation(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The official DINOv2 formula (scale_factor = (grid + 0.1) / M, bicubic, no antialias), for HF's module."""
    pos = self.position_embeddings
    grid = pos.shape[1] - 1
    size = int(math.sqrt(grid))
    h0, w0 = height // 14, width // 14
    if h0 * w0 == grid and h0 == w0:
        return pos
    patch = pos[:, 1:].float().reshape(1, size, size, -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, scale_factor=((h0 + 0.1) / size, (w0 + 0.1) / size), mode="bicubic", antialias=False)
    assert patch.shape[-2:] == (h0, w0)
    return torch.cat([pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, h0 * w0, -1)], dim=1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Our ViT-S/14 (2 blocks, random weights) and an HF Dinov2Model loaded from it through a file."""
    ours = DINOv2Backbone("s", depth=DEPTH).eval()
    _randomise(ours)
    config = transformers.Dinov2Config(
        hidden_size=384,
        num_hidden_layers=DEPTH,
        num_attention_heads=6,
        image_size=518,
        patch_size=14,
        layerscale_value=1.0,
    )
    hf = transformers.Dinov2Model(config).eval()
    missing, unexpected = hf.load_state_dict(_timm_to_hf(ours.vit.state_dict(), old_names=False), strict=False)
    assert not missing and not unexpected
    return ours, hf


def _hf_features(hf, images: torch.Tensor) -> torch.Tensor:
    tokens = hf(pixel_values=images).last_hidden_state[:, 1:]
    side = images.shape[-1] // 14
    return tokens.transpose(1, 2).reshape(images.shape[0], -1, side, side)


def test_parity_with_hf_at_native_size(pair):
    ours, hf = pair
    images = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(images), _hf_features(hf, images), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("side", [98, 448])
def test_parity_with_official_interpolation_at_other_size(pair, monkeypatch, side):
    """HF resamples to an exact size, unlike the official code: patch HF with the official formula, compare."""
    ours, hf = pair
    images = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        stock = _hf_features(hf, images)
        monkeypatch.setattr(type(hf.embeddings), "interpolate_pos_encoding", _official_interpolation)
        official = _hf_features(hf, images)
        got = ours(images)
    assert got.shape == (1, 384, side // 14, side // 14)
    torch.testing.assert_close(got, official, atol=1e-4, rtol=1e-4)
    assert (got - stock).abs().max() > 1e-3  # HF's exact-size resampling is a different function


def test_interpolation_is_official_scale_factor_formula():
    pos = torch.randn(1, 37 * 37, 8)
    out = interpolate_pos_embed(pos, 32, 32)
    grid = pos.reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, scale_factor=(32.1 / 37, 32.1 / 37), mode="bicubic", antialias=False)
    torch.testing.assert_close(out, expected.permute(0, 2, 3, 1).reshape(1, 1024, 8))
    exact = F.interpolate(grid, size=(32, 32), mode="bicubic").permute(0, 2, 3, 1).reshape(1, 1024, 8)
    assert not torch.allclose(out, exact, atol=1e-3)
    assert interpolate_pos_embed(pos, 37, 37) is pos


@pytest.mark.parametrize("old_names", [True, False])
def test_load_hf_layout_safetensors(pair, tmp_path, old_names):
    ours, _ = pair
    path = tmp_path / "hf.safetensors"
    save_file({k: v.contiguous() for k, v in _timm_to_hf(ours.vit.state_dict(), old_names).items()}, str(path))
    fresh = DINOv2Backbone("s", depth=DEPTH).eval()
    fresh.load_weights(path)
    images = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(fresh(images), ours(images))


def test_load_official_layout_with_registers(tmp_path):
    """Official register checkpoints keep the class position inside pos_embed and have mask_token."""
    ours = DINOv2Backbone("s", registers=True, depth=DEPTH).eval()
    _randomise(ours, seed=3)
    state = dict(ours.vit.state_dict())
    cls_pos = torch.randn(1, 1, 384)
    official = {k: v for k, v in state.items() if k not in ("cls_token", "pos_embed", "reg_token")}
    official["cls_token"] = state["cls_token"] - cls_pos
    official["pos_embed"] = torch.cat([cls_pos, state["pos_embed"]], dim=1)
    official["register_tokens"] = state["reg_token"]
    official["mask_token"] = torch.zeros(1, 384)
    path = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(official, path)
    fresh = build_backbone(BackboneConfig(name="dinov2_vits14_reg", weights=str(path), depth=DEPTH)).eval()
    images = torch.randn(1, 3, 70, 70)
    with torch.no_grad():
        torch.testing.assert_close(fresh(images), ours(images), atol=1e-5, rtol=1e-5)


def test_checkpoint_errors_name_file_and_key(tmp_path):
    model = DINOv2Backbone("s", depth=DEPTH)
    with pytest.raises(CheckpointError, match="nope.pth"):
        model.load_weights(tmp_path / "nope.pth")
    state = dict(model.vit.state_dict())
    state["norm.weight"] = torch.zeros(7)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"bad\.pth.*norm\.weight"):
        model.load_weights(path)
    del state["norm.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"bad\.pth: missing key 'norm\.weight'"):
        model.load_weights(path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        model.load_weights(tmp_path / "junk.pth")


def test_deeper_checkpoint_loads_into_truncated_model(tmp_path):
    deep = DINOv2Backbone("s", depth=DEPTH + 1)
    path = tmp_path / "deep.pth"
    torch.save(deep.vit.state_dict(), path)
    shallow = DINOv2Backbone("s", depth=DEPTH)
    shallow.load_weights(path)
    torch.testing.assert_close(shallow.vit.blocks[1].attn.qkv.weight, deep.vit.blocks[1].attn.qkv.weight)


def test_build_backbone_names():
    model = build_backbone(BackboneConfig(name="dinov2_vits14", depth=1))
    assert (model.out_channels, model.stride) == (384, 14)
    assert model.vit.reg_token is None
    assert build_backbone(BackboneConfig(name="dinov2_vits14_reg", depth=1)).vit.reg_token.shape == (1, 4, 384)
    with pytest.raises(ConfigError, match="model.backbone.name"):
        build_backbone(BackboneConfig(name="resnet50"))
    with pytest.raises(ConfigError, match="model.backbone.name"):
        build_backbone(BackboneConfig(name="dinov2_vitx14"))
