"""FLOPs per frame of the refinement stages (everything after the backbone), counted, not timed.

Checks the target "the three refinement stages together cost no more per frame than VQLoC's single stage" and
prints the backbone's cost for scale. Counting uses ``torch.utils.flop_counter.FlopCounterMode`` on meta tensors
(no arithmetic runs, so paper sizes take seconds on any CPU); operations it has no formula for (RoIAlign, softmax,
norms) are not counted, which leaves matrix products and convolutions, the bulk of the cost.

    python benchmarks/bench_stage_flops.py                      # prvql_vitb14 vs vqloc_vitb14 at 448 px, T = 30
    python benchmarks/bench_stage_flops.py --configs tiny demo
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from prvql.config import load_config
from prvql.model import build_prvql


def count(config: str) -> dict[str, float]:
    """GFLOP per frame of the backbone and of everything after it, for one window of ``model.num_frames``."""
    cfg = load_config(config, ["model.backbone.weights=null"])
    with torch.device("meta"):
        model = build_prvql(cfg.model).eval()
        size, frames = cfg.model.input_size, cfg.model.num_frames
        images = torch.empty(1, 3, size, size)
        with FlopCounterMode(display=False) as backbone:
            feats = model.backbone(images)
        clip = feats.expand(frames, -1, -1, -1)[None]
        with FlopCounterMode(display=False) as stages:
            model.forward_features(clip, feats)
    return {
        "config": config,
        "num_stages": cfg.model.num_stages,
        "backbone_gflop_per_frame": backbone.get_total_flops() / 1e9,
        "after_backbone_gflop_per_frame": stages.get_total_flops() / frames / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs=2, default=["prvql_vitb14", "vqloc_vitb14"], metavar=("PRVQL", "VQLOC"))
    args = parser.parse_args()
    prvql, vqloc = (count(c) for c in args.configs)
    ratio = prvql["after_backbone_gflop_per_frame"] / vqloc["after_backbone_gflop_per_frame"]
    print(json.dumps({"prvql": prvql, "vqloc": vqloc, "after_backbone_ratio": ratio, "target_ratio": 1.0}, indent=1))


if __name__ == "__main__":
    main()
