"""Start a model of another shape (input size, fine-tuned backbone stages) from trained weights: an init file.

    python -m experiments.demo_model.resize_weights --weights prvql/weights/demo.safetensors \
        --set model.input_size=224 --output runs/init224.safetensors

The new model is built from the weights file's config with the overrides. Every trainable tensor whose shape still
fits is copied; the temporal blocks' position embeddings ([1, T*h*w, C], (t, h, w) order) are resized per frame
(bicubic, ``torch.nn.functional.interpolate``); what is sized by the feature-map cells and cannot be resized
(SKG's MLPs over the h*w cells) keeps its fresh initialisation (seed 0) and is listed. Writes a weights file with
the new config; a missing or unreadable file or a bad override: one line, exit status 2, nothing written.

The same goes for any other override that adds trainable tensors: with ``--set model.backbone.finetune_stages=2``
the init file holds everything of the old model plus the backbone's last two stages, as the backbone's own weights
file gives them (listed as fresh).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor
from torch.nn.functional import interpolate

from prvql.config import Config, apply_overrides
from prvql.errors import PRVQLError
from prvql.model import build_prvql
from prvql.weights_file import load_weights_config, save_weights, trainable_state_dict


def resize_position_embedding(pos: Tensor, num_frames: int, size: int) -> Tensor:
    """[1, T*s*s, C] (t, h, w) order -> [1, T*size*size, C], each frame's s x s grid resized bicubically."""
    t, c = num_frames, pos.shape[-1]
    side = round((pos.shape[1] // t) ** 0.5)
    if t * side * side != pos.shape[1]:
        raise ValueError(f"position embedding {tuple(pos.shape)} is not {t} square grids")
    grid = pos.reshape(t, side, side, c).permute(0, 3, 1, 2)
    grid = interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, t * size * size, c)


def resized_model(old: dict[str, Tensor], cfg: Config) -> tuple[torch.nn.Module, list[str]]:
    """The model of ``cfg`` holding what fits of the trainable tensors ``old``; and the names left fresh."""
    torch.manual_seed(0)
    model = build_prvql(cfg.model)
    fresh = []
    with torch.no_grad():
        for key, value in trainable_state_dict(model).items():
            if key in old and old[key].shape == value.shape:
                value.copy_(old[key])
            elif key in old and key.endswith("temporal.pos_embed"):
                side = round((value.shape[1] // cfg.model.num_frames) ** 0.5)
                value.copy_(resize_position_embedding(old[key], cfg.model.num_frames, side))
            else:
                fresh.append(key)
    return model, fresh


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True, help="trained weights file (with its config)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--output", type=Path, required=True, help="the init weights file to write")
    args = parser.parse_args()
    try:
        from safetensors.torch import load_file

        cfg = apply_overrides(load_weights_config(args.weights), args.set)
        model, fresh = resized_model(load_file(str(args.weights)), cfg)
        save_weights(model, args.output, cfg, extra={"init": f"{args.weights.name}, resized ({len(fresh)} fresh)"})
    except (PRVQLError, ValueError, OSError) as exc:
        print(f"resize_weights: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}; fresh (not in or not resizable from {args.weights.name}): {', '.join(fresh) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
