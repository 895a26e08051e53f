"""The accelerator sections of ``python -m benchmarks``: throughput per batch, dtype and compile mode, bf16 vs fp32.

Random weights (no file is read; the heads' output layers, initialised near zero, are redrawn with std 0.05 so
that logits and boxes vary and the bf16 comparison means something).

- ``throughput``: for 1, 2, 4, 8 windows per batch, the backbone (frames embedded per second) and the refinement
  stages (searched frames per second) in fp32 and bf16 autocast, with ``torch.compile`` off and on
  (``--no-compile`` skips it), and the peak memory of each row (CUDA).
- ``bf16_vs_fp32``: the largest logit and box difference on the same two windows, and whether the response tracks
  of 4 generated clips come out the same.

``--quick`` uses the tiny config, batches 1-2, 2 clips and no compilation, so it runs in seconds on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from prvql.config import load_config
from prvql.infer.postprocess import build_postprocessor
from prvql.infer.predictor import ClipQuery, build_predictor
from prvql.model import build_prvql
from prvql.model.head import AnchorHead


def device_name(device: torch.device) -> str:
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
    return None  # CPU: the `inference` and `window_memory` sections measure resident-set peaks


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


def paper_model(cfg, device: torch.device) -> torch.nn.Module:
    """A model of ``cfg`` with random weights, head outputs redrawn (std 0.05), batch norms folded, on ``device``."""
    torch.manual_seed(0)
    model = build_prvql(cfg.model)
    for head in (m for m in model.modules() if isinstance(m, AnchorHead)):
        for conv in (head.cls_out, head.reg_out):
            torch.nn.init.normal_(conv.weight, std=0.05)
    return model.to(device).fuse_for_inference()


def bench_throughput(args: argparse.Namespace) -> list[dict]:
    cfg = load_config(args.config, ["model.backbone.weights=null"])
    batches = [1, 2] if args.quick else [1, 2, 4, 8]
    compile_modes = [False] if args.quick or args.no_compile else [False, True]
    model = paper_model(cfg, args.torch_device)
    return throughput(model, cfg, args.torch_device, batches, compile_modes, repeats=1 if args.quick else 3)


def bench_bf16_vs_fp32(args: argparse.Namespace) -> dict:
    cfg = load_config(args.config, ["model.backbone.weights=null"])
    model = paper_model(cfg, args.torch_device)
    return bf16_agreement(model, cfg, args.torch_device, clips=2 if args.quick else 4)
