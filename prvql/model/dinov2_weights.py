"""Reading DINOv2 weights from a local file in any of three layouts, converted to timm's layout.

Layouts accepted:

- official (``facebookresearch/dinov2``, e.g. ``dinov2_vitb14_pretrain.pth``): ``blocks.N.attn.qkv.weight``,
  ``pos_embed`` with the class-token position first, ``mask_token``, ``register_tokens``, SwiGLU ``mlp.w12``/``w3``;
- timm (``vit_*_patch14[_reg4]_dinov2``): the official names, with ``reg_token`` and, for register models, the
  class-token position folded into ``cls_token`` (``pos_embed`` then holds patch positions only);
- HF transformers ``Dinov2Model`` / ``Dinov2WithRegistersModel`` (``embeddings.*``, ``encoder.layer.N.*``, with
  either the on-disk names ``attention.attention.query`` or the in-memory names ``attention.q_proj``), optionally
  under a ``dinov2.`` prefix.

``.safetensors`` files are read with safetensors, anything else with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from prvql.errors import CheckpointError
from prvql.paths import check_input_file
from prvql.weights_file import torch_load_untrusted

# HF per-layer suffix -> timm per-block suffix (q/k/v and the SwiGLU halves are handled separately)
_HF_LAYER_RENAMES = {
    "norm1.": "norm1.",
    "norm2.": "norm2.",
    "attention.output.dense.": "attn.proj.",
    "attention.o_proj.": "attn.proj.",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1.": "mlp.fc1.",
    "mlp.fc2.": "mlp.fc2.",
    "mlp.weights_in.": "mlp.fc1.",
    "mlp.weights_out.": "mlp.fc2.",
    "mlp.down_proj.": "mlp.fc2.",
}
_HF_QKV = (
    ("attention.attention.query.", "attention.attention.key.", "attention.attention.value."),
    ("attention.q_proj.", "attention.k_proj.", "attention.v_proj."),
)


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a checkpoint file; CheckpointError if it is missing or unreadable."""
    if path.suffix == ".safetensors":
        check_input_file(path, "backbone weights file (model.backbone.weights)", CheckpointError)
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    else:
        state = torch_load_untrusted(path, "backbone checkpoint (model.backbone.weights)")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a flat dict of tensors (a DINOv2 state dict)")
    return dict(state)


def _hf_to_official(state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """HF transformers names -> official DINOv2 names."""
    out: dict[str, Tensor] = {}
    pending: dict[str, Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix("dinov2.")
        if name.startswith("embeddings."):
            sub = name.removeprefix("embeddings.")
            renames = {
                "cls_token": "cls_token",
                "mask_token": "mask_token",
                "register_tokens": "register_tokens",
                "position_embeddings": "pos_embed",
                "patch_embeddings.projection.weight": "patch_embed.proj.weight",
                "patch_embeddings.projection.bias": "patch_embed.proj.bias",
            }
            if sub not in renames:
                raise CheckpointError(f"{path}: unexpected key '{key}' for an HF DINOv2 checkpoint")
            out[renames[sub]] = value
        elif name.startswith("layernorm."):
            out["norm." + name.removeprefix("layernorm.")] = value
        elif (match := re.match(r"encoder\.layer\.(\d+)\.(.+)", name)) is not None:
            pending[f"{match.group(1)}|{match.group(2)}"] = value
        else:
            raise CheckpointError(f"{path}: unexpected key '{key}' for an HF DINOv2 checkpoint")
    for item in sorted(pending):
        index, suffix = item.split("|", 1)
        prefix = f"blocks.{index}."
        for q_name, k_name, v_name in _HF_QKV:
            if suffix.startswith(q_name):
                tail = suffix.removeprefix(q_name)
                parts = [pending.get(f"{index}|{n}{tail}") for n in (q_name, k_name, v_name)]
                if any(p is None for p in parts):
                    raise CheckpointError(f"{path}: encoder.layer.{index}: query/key/value '{tail}' incomplete")
                out[f"{prefix}attn.qkv.{tail}"] = torch.cat(parts, dim=0)
        if suffix.startswith("mlp.gate_proj."):
            tail = suffix.removeprefix("mlp.gate_proj.")
            up = pending.get(f"{index}|mlp.up_proj.{tail}")
            if up is None:
                raise CheckpointError(f"{path}: encoder.layer.{index}.mlp.up_proj.{tail} missing")
            out[f"{prefix}mlp.fc1.{tail}"] = torch.cat([pending[item], up], dim=0)
        for hf_name, timm_name in _HF_LAYER_RENAMES.items():
            if suffix.startswith(hf_name):
                out[prefix + timm_name + suffix.removeprefix(hf_name)] = pending[item]
    return out


def to_timm_layout(state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """Convert an official, timm or HF DINOv2 state dict to timm's names and conventions."""
    names = [k.removeprefix("dinov2.") for k in state]
    if any(n.startswith(("embeddings.", "encoder.layer.")) for n in names):
        state = _hf_to_official(state, path)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key == "mask_token":
            continue
        key = re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", key)
        key = re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", key)
        out[key] = value
    if "register_tokens" in out:
        if "cls_token" not in out or "pos_embed" not in out:
            raise CheckpointError(f"{path}: a register checkpoint needs 'cls_token' and 'pos_embed'")
        pos = out.pop("pos_embed")
        out["reg_token"] = out.pop("register_tokens")
        out["cls_token"] = out["cls_token"] + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]
    return out
