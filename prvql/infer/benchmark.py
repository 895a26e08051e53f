"""Measure inference speed and memory of the Predictor on generated clips with random weights.

The library behind ``prvql bench`` and the ``inference`` and ``window_memory`` sections of ``python -m benchmarks``
(benchmarks/README.md). Clips are random frames (a small pool cycled through, so generating them costs nothing and
memory does not grow with the clip), queries are random crops whose query frame is the end of the clip.

- :func:`benchmark_inference`: after a warm-up run, two clips of N and 2N frames with Q queries each: searched
  frames per second of wall time (Q x frames / s, backbone included) and clip frames per second, backbone time per
  frame, stage time per frame and query, decode + preprocess time per frame, backbone calls and images, and peak
  memory; checks that the backbone runs once per frame whatever Q and that memory stays flat with clip length.
- :func:`benchmark_window_memory`: the peak memory of ONE window (T frames + the query, ``windows_per_batch=1``).

Peak memory (:class:`PeakMemory`): CUDA ``torch.cuda.max_memory_allocated``; CPU the rise of the process's peak
resident set over the run, via /proc/self/clear_refs, else ``getrusage``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from prvql.config import load_config
from prvql.infer.predictor import ClipQuery, Predictor, PredictorStats, build_predictor
from prvql.infer.trained_model import resolve_device
from prvql.model import build_prvql

FRAME_POOL = 8  # distinct random frames a generated clip cycles through
TARGETS = {
    "backbone_once": "backbone images == clip frames + one per query crop, whatever Q",
    "stages_per_query": "stage cost grows with Q x frames; backbone cost with frames only",
    "memory_flat": "peak memory of the 2N-frame clip within 10% (or 64 MB) of the N-frame clip",
    "paper_speed": "paper: PRVQL 30 FPS, VQLoC 36 FPS end to end (GPU not stated; no timing code released)",
}
WINDOW_TARGET_CPU_MB = 2.5 * 1024  # one paper-size window on the CPU, above the built model


def rss_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``) in MB; None where unavailable."""
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

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb = 0.0
        if device.type == "cuda":
            self.method = "cuda max_memory_allocated above the model's allocation"
            self.baseline = torch.cuda.memory_allocated(device) / 2**20
        else:
            self.method = "peak RSS (VmHWM) above the RSS after building the model"
            self.baseline = rss_mb("VmRSS") or self._maxrss()

    @staticmethod
    def _maxrss() -> float:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def __enter__(self) -> PeakMemory:
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
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak = rss_mb("VmHWM") if self.method.startswith("peak RSS") else None
            peak = peak if peak is not None else self._maxrss()
        self.peak_mb = max(peak - self.baseline, 0.0)


def random_clip(num_frames: int, height: int, width: int, seed: int = 0) -> Iterator[np.ndarray]:
    """``num_frames`` random uint8 [H, W, 3] frames (a pool of FRAME_POOL reused, so generating them costs nothing)."""
    pool = np.random.default_rng(seed).integers(0, 256, (FRAME_POOL, height, width, 3), dtype=np.uint8)
    return (pool[i % len(pool)] for i in range(num_frames))


def measure(predictor: Predictor, memory: PeakMemory, num_frames: int, queries: int, height: int, width: int) -> dict:
    """One timed run of ``predictor`` over a generated clip of ``num_frames`` frames and ``queries`` queries."""
    size = predictor.input_size
    generator = torch.Generator().manual_seed(1)
    qs = [ClipQuery(f"q{i}", torch.randn(3, size, size, generator=generator), num_frames) for i in range(queries)]
    predictor.stats = PredictorStats()
    with memory:
        t0 = time.perf_counter()
        predictor.predict_clip(random_clip(num_frames, height, width), qs)
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


def _device_label(device: torch.device) -> str:
    return str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")


def benchmark_inference(
    config: str,
    overrides: list[str] = (),
    device: str = "cpu",
    dtype: str = "fp32",
    queries: int = 3,
    frames: int = 60,
    height: int = 360,
    width: int = 480,
) -> dict:
    """Speed and memory of the Predictor on clips of ``frames`` and 2 x ``frames`` frames with ``queries`` queries.

    Args:
        config: config file or preset; random weights (the backbone's weights file is not read).
        overrides: ``KEY=VALUE`` config overrides.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        dtype: ``fp32``, or ``bf16`` autocast (an approximation).
        queries: Q, queries searched in each clip.
        frames: N; the clips measured have N and 2N frames (after a warm-up of one batch of windows).
        height: height of the generated frames.
        width: width of the generated frames.

    Returns:
        the settings, one row per clip (:func:`measure`), the ``checks`` and the ``targets`` they stand for.
    """
    fixed = ["model.backbone.weights=null", f"inference.bf16={str(dtype == 'bf16').lower()}"]
    cfg = load_config(config, [*overrides, *fixed])
    torch_device = resolve_device(device)
    torch.manual_seed(0)
    model = build_prvql(cfg.model).fuse_for_inference()
    predictor = build_predictor(cfg, model, torch_device, sync_timing=True)
    memory = PeakMemory(torch_device)
    warmup = min(frames, cfg.model.num_frames * cfg.inference.windows_per_batch)
    measure(predictor, memory, warmup, 1, height, width)
    runs = [measure(predictor, memory, n, queries, height, width) for n in (frames, 2 * frames)]
    short, long = runs
    checks = {
        "backbone_once": all(r["backbone_images"] == r["clip_frames"] + r["queries"] for r in runs),
        "memory_flat": long["peak_memory_mb"] <= max(1.1 * short["peak_memory_mb"], short["peak_memory_mb"] + 64),
    }
    return {
        "device": _device_label(torch_device),
        "dtype": dtype,
        "config": config,
        "backbone": cfg.model.backbone.name,
        "input_size": cfg.model.input_size,
        "window_frames": cfg.model.num_frames,
        "windows_per_batch": cfg.inference.windows_per_batch,
        "frame_size": [height, width],
        "torch_threads": torch.get_num_threads(),
        "runs": runs,
        "checks": checks,
        "targets": TARGETS,
    }


def benchmark_window_memory(
    config: str, device: str = "cpu", dtype: str = "fp32", height: int = 540, width: int = 720
) -> dict:
    """Peak memory of inference on ONE window with random weights: the Predictor with ``windows_per_batch=1`` over
    a generated clip of exactly T frames, so one backbone call embeds the T frames, one the query, and one stage
    forward runs (30 frames at 448 px with DINOv2 ViT-B/14 for ``prvql_vitb14``). Target on the CPU: 2.5 GB above
    the built model."""
    overrides = ["model.backbone.weights=null", "inference.windows_per_batch=1"]
    cfg = load_config(config, [*overrides, f"inference.bf16={str(dtype == 'bf16').lower()}"])
    torch_device = resolve_device(device)
    torch.manual_seed(0)
    model = build_prvql(cfg.model)
    parameters_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    predictor = build_predictor(cfg, model, torch_device, sync_timing=True)
    run = measure(predictor, PeakMemory(torch_device), cfg.model.num_frames, 1, height, width)
    on_cpu = torch_device.type == "cpu"
    return {
        "config": config,
        "backbone": cfg.model.backbone.name,
        "input_size": cfg.model.input_size,
        "window_frames": cfg.model.num_frames,
        "frame_size": [height, width],
        "device": _device_label(torch_device),
        "dtype": dtype,
        "torch_threads": torch.get_num_threads(),
        "model_parameters_mb": round(parameters_mb, 1),
        "peak_memory_mb": run["peak_memory_mb"],
        "memory_method": run["memory_method"],
        "wall_s": run["wall_s"],
        "target_mb": WINDOW_TARGET_CPU_MB if on_cpu else None,
        "within_target": run["peak_memory_mb"] <= WINDOW_TARGET_CPU_MB if on_cpu else None,
    }
