"""Frozen image backbones: images -> patch-feature maps ``[N, C, S/stride, S/stride]``.

A backbone is any ``nn.Module`` with attributes ``out_channels: int`` and ``stride: int`` whose forward maps
ImageNet-normalised images ``[N, 3, S, S]`` to features ``[N, out_channels, S/stride, S/stride]``.
:data:`BACKBONES` maps a name prefix (``BackboneConfig.name`` starts with it) to a builder; adding a backbone
is one line there. Each backbone freezes itself (no gradient, eval mode); only EfficientNet-Lite0 can fine-tune its
last block stages (``BackboneConfig.finetune_stages``, a switch of the demo model).

DINOv2 (``dinov2_vit{s,b,l,g}14[_reg]``) is built with timm (``pretrained=False``, never the network) and
returns the last block's final-norm patch tokens, as ``get_intermediate_layers(x, n=1)`` does in the official
code. The positional embedding is resampled with the official formula (bicubic, ``scale_factor`` =
(grid + 0.1) / 37, no antialiasing), not timm's exact-size resampling, so that features at 448 px equal the
official implementation's for the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prvql.config import BackboneConfig
from prvql.errors import CheckpointError, ConfigError
from prvql.model.dinov2_weights import read_state_dict, to_timm_layout
from prvql.model.efficientnet import EfficientNetLite0Backbone

_DINOV2_SIZES = {"s": "small", "b": "base", "l": "large", "g": "giant"}


def interpolate_pos_embed(patch_pos: Tensor, height: int, width: int, offset: float = 0.1) -> Tensor:
    """Resample square patch positional embeddings the way the official DINOv2 code does.

    Args:
        patch_pos: ``[1, M*M, C]`` positional embeddings of an ``M x M`` patch grid (no class token).
        height: target grid rows.
        width: target grid columns.
        offset: DINOv2's ``interpolate_offset``; the scale factor is ``(grid + offset) / M``.

    Returns:
        ``[1, height*width, C]`` in the input dtype (computed in float32). Unchanged at the native grid.
    """
    size = math.isqrt(patch_pos.shape[1])
    if (height, width) == (size, size):
        return patch_pos
    dim = patch_pos.shape[-1]
    grid = patch_pos.float().reshape(1, size, size, dim).permute(0, 3, 1, 2)
    scale = ((height + offset) / size, (width + offset) / size)
    out = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    return out.permute(0, 2, 3, 1).reshape(1, height * width, dim).to(patch_pos.dtype)


class DINOv2Backbone(nn.Module):
    """DINOv2 ViT/14 returning the last block's normalised patch tokens as a feature map.

    Args:
        size: ``"s"``, ``"b"``, ``"l"`` or ``"g"``.
        registers: the variant with 4 register tokens.
        depth: keep only the first ``depth`` blocks (tiny CPU models); None keeps all.
    """

    def __init__(self, size: str, registers: bool = False, depth: int | None = None) -> None:
        super().__init__()
        name = f"vit_{_DINOV2_SIZES[size]}_patch14{'_reg4' if registers else ''}_dinov2"
        kwargs = {} if depth is None else {"depth": depth}
        self.vit = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        self.stride: int = self.vit.patch_embed.patch_size[0]
        self.out_channels: int = self.vit.embed_dim
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> DINOv2Backbone:
        """The backbone is frozen: it stays in eval mode whatever the parent asks."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """``[N, 3, S, S]`` -> ``[N, C, S/14, S/14]`` (S a multiple of 14)."""
        vit = self.vit
        patches = vit.patch_embed.proj(images)  # [N, C, h, w]
        n, _, h, w = patches.shape
        x = vit.patch_embed.norm(patches.flatten(2).transpose(1, 2))
        pos_prefix = 0 if vit.no_embed_class else 1
        x = x + interpolate_pos_embed(vit.pos_embed[:, pos_prefix:], h, w).to(x.dtype)
        cls = vit.cls_token + vit.pos_embed[:, :pos_prefix].sum(1, keepdim=True)
        prefix = [cls.expand(n, -1, -1).to(x.dtype)]
        if vit.reg_token is not None:
            prefix.append(vit.reg_token.expand(n, -1, -1).to(x.dtype))
        x = vit.norm(vit.blocks(vit.norm_pre(torch.cat([*prefix, x], dim=1))))
        return x[:, vit.num_prefix_tokens :].transpose(1, 2).reshape(n, -1, h, w)

    def load_weights(self, path: str | Path) -> None:
        """Load an official, timm or HF DINOv2 checkpoint (see :mod:`prvql.model.dinov2_weights`).

        Blocks beyond this model's depth are ignored; any other missing, unexpected or mis-shaped tensor
        raises :class:`CheckpointError` naming the file and the key.
        """
        path = Path(path)
        state = to_timm_layout(read_state_dict(path), path)
        own = self.vit.state_dict()
        depth = len(self.vit.blocks)
        for key in list(state):
            block = key.split(".")[1] if key.startswith("blocks.") else None
            if block is not None and int(block) >= depth:
                del state[key]
            elif key not in own:
                raise CheckpointError(f"{path}: unexpected key '{key}' for {type(self).__name__}")
            elif state[key].shape != own[key].shape:
                got, expected = tuple(state[key].shape), tuple(own[key].shape)
                raise CheckpointError(f"{path}: key '{key}' has shape {got}, the model expects {expected}")
        missing = sorted(set(own) - set(state))
        if missing:
            raise CheckpointError(f"{path}: missing key '{missing[0]}' ({len(missing)} missing in all)")
        self.vit.load_state_dict(state)


def build_dinov2(cfg: BackboneConfig) -> DINOv2Backbone:
    """``dinov2_vit{s,b,l,g}14`` with an optional ``_reg`` suffix; weights from ``cfg.weights`` if set."""
    name = cfg.name.removesuffix("_reg")
    size = name.removeprefix("dinov2_vit").removesuffix("14")
    if not name.startswith("dinov2_vit") or not name.endswith("14") or size not in _DINOV2_SIZES:
        raise ConfigError(f"model.backbone.name: unknown DINOv2 variant '{cfg.name}' (e.g. dinov2_vitb14_reg)")
    backbone = DINOv2Backbone(size, registers=cfg.name.endswith("_reg"), depth=cfg.depth)
    if cfg.weights == "package":
        raise ConfigError(f"model.backbone.weights: no package ships weights for '{cfg.name}'; give a file")
    if cfg.finetune_stages:
        raise ConfigError(f"model.backbone.finetune_stages: '{cfg.name}' is always frozen (only efficientnet_lite0)")
    if cfg.weights is not None:
        backbone.load_weights(cfg.weights)
    return backbone


BACKBONES: dict[str, Callable[[BackboneConfig], nn.Module]] = {
    "dinov2_": build_dinov2,
    "efficientnet_lite0": lambda cfg: EfficientNetLite0Backbone(cfg.weights, cfg.finetune_stages),
}


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """The backbone whose :data:`BACKBONES` prefix is the longest match of ``cfg.name``."""
    matches = [prefix for prefix in BACKBONES if cfg.name.startswith(prefix)]
    if not matches:
        known = ", ".join(sorted(BACKBONES))
        raise ConfigError(f"model.backbone.name: unknown backbone '{cfg.name}' (known prefixes: {known})")
    return BACKBONES[max(matches, key=len)](cfg)
