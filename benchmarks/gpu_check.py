"""GPU readiness check: throughput, bf16 vs fp32, torch.compile, peak memory and one training step, as JSON.

Random weights (no file is read; the heads' output layers, initialised near zero, are redrawn with std 0.05 so
that logits and boxes vary and the bf16 comparison means something). For 1..8 windows per batch it times the
backbone (frames embedded per second) and the refinement stages (searched frames per second) in fp32 and bf16
autocast, with ``torch.compile`` off and on; compares bf16 with fp32 (largest logit and box difference on the
same windows, and whether the response tracks of a few generated clips come out the same); records peak memory;
and times one training iteration of the paper configuration (forward, losses, backward, AdamW step).

    bash benchmarks/gpu_check.sh                                # one GPU, paper config, < 8 minutes
    python benchmarks/gpu_check.py --device cpu --quick --output check.json   # plumbing only (CI)

``--quick`` uses the tiny config, batches 1-2 and no compilation, so it runs in seconds on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_train_step import RandomTrainStep

from prvql.config import load_config
from prvql.infer.postprocess import build_postprocessor
from prvql.infer.predictor import ClipQuery, build_predictor
from prvql.model import build_prvql
from prvql.model.head import AnchorHead


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return None  # CPU: see `prvql bench` for resident-set peaks


def _time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def throughput(model, cfg, device: torch.device, batches: list[int], compile_modes: list[bool], repeats: int) -> list:
    """Frames/s of the backbone (embedding) and of the stages for each batch of windows, dtype and compile mode."""
    t, s = cfg.model.num_frames, cfg.model.input_size
    rows = []
    for compiled in compile_modes:
        embed = torch.compile(model.embed) if compiled else model.embed
        stages = torch.compile(model.forward_embedded) if compiled else model.forward_embedded
        for bf16 in (False, True):
            for b in batches:
                images = torch.randn(b * t, 3, s, s, device=device)
                query = torch.randn(b, 3, s, s, device=device)
                _reset_peak(device)
                with torch.inference_mode(), _autocast(device, bf16):
                    video = embed(images)
                    query_feats = embed(query)
                    video = video.view(b, t, *video.shape[1:])
                    backbone = _time(lambda: embed(images), device, repeats)  # noqa: B023
                    stage = _time(lambda: stages(video, query_feats), device, repeats)  # noqa: B023
                rows.append(
                    {
                        "windows": b,
                        "frames": b * t,
                        "dtype": "bf16" if bf16 else "fp32",
                        "compile": compiled,
                        "backbone_fps": round(b * t / backbone, 1),
                        "stages_fps": round(b * t / stage, 1),
                        "end_to_end_fps": round(b * t / (backbone + stage), 1),
                        "peak_memory_mb": _peak_mb(device),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def bf16_agreement(model, cfg, device: torch.device, clips: int) -> dict:
    """Largest fp32-vs-bf16 difference of final logits and boxes on the same windows, and whether the response
    tracks of ``clips`` generated clips (random frames, 3 windows each, a query crop from the clip) are the same."""
    t, s = cfg.model.num_frames, cfg.model.input_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2 * t, 3, s, s, generator=generator).to(device)
    query = torch.randn(2, 3, s, s, generator=generator).to(device)
    outputs = {}
    for bf16 in (False, True):
        with torch.inference_mode(), _autocast(device, bf16):
            video = model.embed(images)
            out = model.forward_embedded(video.view(2, t, *video.shape[1:]), model.embed(query))
        outputs[bf16] = {k: out[k].float() for k in ("logits", "boxes")}
    postprocess = build_postprocessor(cfg.inference)
    same, tracks = 0, []
    rng = np.random.default_rng(0)
    for c in range(clips):
        pool = rng.integers(0, 256, (6, 240, 320, 3), dtype=np.uint8)
        frames = [pool[(i * 7 + c) % len(pool)] for i in range(3 * t)]
        crop = torch.from_numpy(frames[c % len(frames)][60:180, 80:240]).permute(2, 0, 1).float() / 255
        image = torch.nn.functional.interpolate(crop[None], size=(s, s), mode="bilinear")[0]
        found = []
        for bf16 in (False, True):
            cfg.inference.bf16 = bf16
            result = build_predictor(cfg, model, device).predict(iter(frames), ClipQuery("q", image, len(frames)))
            track, _ = postprocess(result.scores, result.boxes)
            found.append(track.extent if len(track) else None)
        cfg.inference.bf16 = False
        same += found[0] == found[1]
        tracks.append({"fp32": found[0], "bf16": found[1]})
    return {
        "max_logit_abs_diff": (outputs[True]["logits"] - outputs[False]["logits"]).abs().max().item(),
        "max_box_abs_diff": (outputs[True]["boxes"] - outputs[False]["boxes"]).abs().max().item(),
        "logit_scale": outputs[False]["logits"].abs().max().item(),
        "same_tracks": f"{same}/{clips}",
        "tracks": tracks,
    }


def training_step(cfg, device: torch.device, repeats: int) -> dict:
    """Seconds of one training iteration (batch ``train.batch_size``; bf16 autocast on CUDA as in training)."""
    b = cfg.train.batch_size
    bf16 = cfg.train.bf16 and device.type == "cuda"
    step = RandomTrainStep(cfg, device, b, bf16)
    _reset_peak(device)
    seconds = _time(step, device, repeats)
    return {"batch_size": b, "bf16": bf16, "seconds_per_step": round(seconds, 4), "peak_memory_mb": _peak_mb(device)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--config", default=None, help="default: prvql_vitb14 (tiny with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny config, batches 1-2, no compile (CI plumbing)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--output", type=Path, help="write the JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cfg = load_config(args.config or ("tiny" if args.quick else "prvql_vitb14"), ["model.backbone.weights=null"])
    batches = [1, 2] if args.quick else [1, 2, 4, 8]
    compile_modes = [False] if args.quick or args.no_compile else [False, True]
    repeats = 1 if args.quick else 3
    torch.manual_seed(0)
    started = time.perf_counter()
    model = build_prvql(cfg.model)
    for head in (m for m in model.modules() if isinstance(m, AnchorHead)):
        for conv in (head.cls_out, head.reg_out):
            torch.nn.init.normal_(conv.weight, std=0.05)
    model = model.to(device).fuse_for_inference()
    result = {
        "device": _device_name(device),
        "torch": torch.__version__,
        "config": args.config or ("tiny" if args.quick else "prvql_vitb14"),
        "backbone": cfg.model.backbone.name,
        "input_size": cfg.model.input_size,
        "window_frames": cfg.model.num_frames,
        "stages": cfg.model.num_stages,
        "torch_threads": torch.get_num_threads(),
        "throughput": throughput(model, cfg, device, batches, compile_modes, repeats),
        "bf16_vs_fp32": bf16_agreement(copy.deepcopy(model), cfg, device, clips=2 if args.quick else 4),
        "training_step": training_step(cfg, device, repeats),
    }
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=1)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_suffix(args.output.suffix + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.output)
    return result


if __name__ == "__main__":
    main()
