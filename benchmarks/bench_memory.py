"""Peak memory of inference on ONE window (T frames + the query) with the paper model, random weights.

Runs the Predictor with ``windows_per_batch=1`` over a generated clip of exactly T frames (30 at 448 px with
DINOv2 ViT-B/14 for ``prvql_vitb14``), so one backbone call embeds the T frames, one embeds the query, and one
stage forward runs. Prints JSON with the peak memory above the built model and the target (2.5 GB on CPU).

    python benchmarks/bench_memory.py [--config prvql_vitb14] [--device cpu] [--dtype fp32|bf16]
"""

from __future__ import annotations

import argparse
import json

import torch

from prvql.commands.bench import PeakMemory, measure
from prvql.config import load_config
from prvql.infer.predictor import build_predictor
from prvql.infer.trained_model import resolve_device
from prvql.model import build_prvql

TARGET_CPU_MB = 2.5 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="prvql_vitb14")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--height", type=int, default=540)
    parser.add_argument("--width", type=int, default=720)
    args = parser.parse_args()
    overrides = ["model.backbone.weights=null", "inference.windows_per_batch=1"]
    overrides.append(f"inference.bf16={str(args.dtype == 'bf16').lower()}")
    cfg = load_config(args.config, overrides)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build_prvql(cfg.model)
    parameters_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    predictor = build_predictor(cfg, model, device, sync_timing=True)
    memory = PeakMemory(device)
    run = measure(predictor, memory, cfg.model.num_frames, 1, args.height, args.width)
    result = {
        "config": args.config,
        "backbone": cfg.model.backbone.name,
        "input_size": cfg.model.input_size,
        "window_frames": cfg.model.num_frames,
        "device": str(device),
        "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(),
        "model_parameters_mb": round(parameters_mb, 1),
        "peak_memory_mb": run["peak_memory_mb"],
        "memory_method": run["memory_method"],
        "wall_s": run["wall_s"],
        "target_mb": TARGET_CPU_MB if device.type == "cpu" else None,
        "within_target": run["peak_memory_mb"] <= TARGET_CPU_MB if device.type == "cpu" else None,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
