"""Measure inference speed and memory of the Predictor on a generated clip with random weights (prints JSON).

Each run searches a clip of random frames for Q queries whose query frame is the end of the clip, after a
warm-up run. Reported per run: searched frames per second of wall time (Q x frames / s, backbone included) and
clip frames per second, backbone time per frame, stage time per frame and query, decode+preprocess time per
frame, backbone calls and images, and peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the rise of
the process's peak resident set over the run, via /proc/self/clear_refs, else ``getrusage``). Two clip lengths
(N and 2N frames) show whether memory stays flat with clip length.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from prvql.commands.options import add_device_option, add_override_option, check_range

FRAME_POOL = 8  # distinct random frames the generated clip cycles through
MAX_FRAMES = 100_000  # N; frames are generated one at a time, so memory does not grow with N
MAX_SIDE = 4096  # --height / --width: the frame pool holds FRAME_POOL frames of this size
MAX_QUERIES = 1024
TARGETS = {
    "backbone_once": "backbone images == clip frames + one per query crop, whatever Q",
    "stages_per_query": "stage cost grows with Q x frames; backbone cost with frames only",
    "memory_flat": "peak memory of the 2N-frame clip within 10% (or 64 MB) of the N-frame clip",
    "paper_speed": "paper: PRVQL 30 FPS, VQLoC 36 FPS end to end (GPU not stated; no timing code released)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="tiny", help="config file or preset (default: tiny)")
    add_device_option(parser, default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="bf16 = autocast (an approximation)")
    parser.add_argument("--queries-per-clip", type=int, default=3, help="queries searched in each clip (Q)")
    parser.add_argument("--frames", type=int, default=60, help="N: the clip lengths measured are N and 2N")
    parser.add_argument("--height", type=int, default=360, help="height of the generated frames")
    parser.add_argument("--width", type=int, default=480, help="width of the generated frames")
    add_override_option(parser, "inference.windows_per_batch=8")
    parser.add_argument("--output", type=Path, help="also write the JSON here")


def _rss_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory of a block above a baseline taken once (after the model is built), in MB.

    CUDA: ``max_memory_allocated`` (reset on entry) minus the allocated baseline. CPU: the process's peak resident
    set (``VmHWM`` reset on entry through /proc/self/clear_refs; ``ru_maxrss`` where that is unavailable, then
    an earlier higher peak hides a lower one) minus the baseline resident set. Memory the allocator kept from a
    previous block counts in both, so runs measured one after the other compare fairly.
    """

    def __init__(self, device) -> None:
        import torch

        self.device = device
        self.peak_mb = 0.0
        if device.type == "cuda":
            self.method = "cuda max_memory_allocated above the model's allocation"
            self.baseline = torch.cuda.memory_allocated(device) / 2**20
        else:
            self.method = "peak RSS (VmHWM) above the RSS after building the model"
            self.baseline = _rss_mb("VmRSS") or self._maxrss()

    @staticmethod
    def _maxrss() -> float:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def __enter__(self) -> PeakMemory:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)
        except OSError:
            self.method = "ru_maxrss above the RSS after building the model (an earlier higher peak hides this one)"
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak = _rss_mb("VmHWM") if self.method.startswith("peak RSS") else None
            peak = peak if peak is not None else self._maxrss()
        self.peak_mb = max(peak - self.baseline, 0.0)


def _clip(num_frames: int, height: int, width: int, seed: int = 0):
    """Random uint8 [H, W, 3] frames (a pool of FRAME_POOL reused, so generating them costs nothing)."""
    import numpy as np

    pool = np.random.default_rng(seed).integers(0, 256, (FRAME_POOL, height, width, 3), dtype=np.uint8)
    return (pool[i % len(pool)] for i in range(num_frames))


def measure(predictor, memory: PeakMemory, num_frames: int, queries: int, height: int, width: int) -> dict:
    """One timed run of ``predictor`` over a generated clip of ``num_frames`` frames and ``queries`` queries."""
    import dataclasses

    import torch

    from prvql.infer.predictor import ClipQuery, PredictorStats

    size = predictor.input_size
    generator = torch.Generator().manual_seed(1)
    qs = [ClipQuery(f"q{i}", torch.randn(3, size, size, generator=generator), num_frames) for i in range(queries)]
    predictor.stats = PredictorStats()
    with memory:
        t0 = time.perf_counter()
        predictor.predict_clip(_clip(num_frames, height, width), qs)
        if predictor.device.type == "cuda":
            torch.cuda.synchronize(predictor.device)
        wall = time.perf_counter() - t0
    s = predictor.stats
    return {
        "clip_frames": num_frames,
        "queries": queries,
        "wall_s": round(wall, 4),
        "searched_fps": round(queries * num_frames / wall, 2),
        "clip_fps": round(num_frames / wall, 2),
        "backbone_ms_per_frame": round(1000 * s.backbone_seconds / max(s.backbone_images, 1), 3),
        "stages_ms_per_frame_per_query": round(1000 * s.stage_seconds / (queries * num_frames), 3),
        "decode_preprocess_ms_per_frame": round(1000 * s.decode_seconds / num_frames, 3),
        "peak_memory_mb": round(memory.peak_mb, 1),
        "memory_method": memory.method,
        **{k: v for k, v in dataclasses.asdict(s).items() if not k.endswith("seconds")},
    }


def run(args: argparse.Namespace) -> int:
    import torch

    from prvql.atomic import atomic_write_text
    from prvql.config import load_config
    from prvql.infer.predictor import build_predictor
    from prvql.infer.trained_model import resolve_device
    from prvql.model import build_prvql
    from prvql.paths import check_output_file

    for option, value, most in (
        ("--frames", args.frames, MAX_FRAMES),
        ("--queries-per-clip", args.queries_per_clip, MAX_QUERIES),
        ("--height", args.height, MAX_SIDE),
        ("--width", args.width, MAX_SIDE),
    ):
        check_range(option, value, 1, most)
    if args.output is not None:
        check_output_file(args.output, "--output")
    overrides = ["model.backbone.weights=null", f"inference.bf16={str(args.dtype == 'bf16').lower()}"]
    cfg = load_config(args.config, [*args.overrides, *overrides])
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build_prvql(cfg.model).fuse_for_inference()
    predictor = build_predictor(cfg, model, device, sync_timing=True)
    memory = PeakMemory(device)
    warmup = min(args.frames, cfg.model.num_frames * cfg.inference.windows_per_batch)
    measure(predictor, memory, warmup, 1, args.height, args.width)
    runs = [
        measure(predictor, memory, n, args.queries_per_clip, args.height, args.width)
        for n in (args.frames, 2 * args.frames)
    ]
    short, long = runs
    checks = {
        "backbone_once": all(r["backbone_images"] == r["clip_frames"] + r["queries"] for r in runs),
        "memory_flat": long["peak_memory_mb"] <= max(1.1 * short["peak_memory_mb"], short["peak_memory_mb"] + 64),
    }
    result = {
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "dtype": args.dtype,
        "config": args.config,
        "backbone": cfg.model.backbone.name,
        "input_size": cfg.model.input_size,
        "window_frames": cfg.model.num_frames,
        "windows_per_batch": cfg.inference.windows_per_batch,
        "frame_size": [args.height, args.width],
        "torch_threads": torch.get_num_threads(),
        "runs": runs,
        "checks": checks,
        "targets": TARGETS,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.output is not None:
        atomic_write_text(args.output, text + "\n")
    return 0
