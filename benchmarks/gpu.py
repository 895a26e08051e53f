"""The accelerator sections of ``python -m benchmarks``, cheapest and safest first (``benchmarks/gpu_check.sh``).

Random weights (no file is read; the heads' output layers, initialised near zero, are redrawn with std 0.05 so that
logits and boxes vary), except the track comparison of ``bf16_vs_fp32``, which uses the shipped demo model when it
loads. Precisions: ``fp32`` is full FP32 (TF32 off for matmuls AND cuDNN convolutions), ``tf32`` turns TF32 on for
both, ``bf16`` is bf16 autocast with TF32 off for what autocast leaves in fp32.

- ``environment``: GPU, driver, CUDA / cuDNN, package versions, the TF32 defaults, where prvql is imported from.
- ``throughput``: eager frames/s of the backbone (frames embedded), the stages (frames searched, features given)
  and end to end (frames + query embedded, then the stages) for 1, 2, 4, 8 windows per batch in each precision,
  and the peak memory of each row above a clean baseline (the model); on CUDA also the host synchronisations of
  one stage forward (``torch.cuda.set_sync_debug_mode``).
- ``bf16_vs_fp32``: the largest bf16 and TF32 differences of logits and boxes on the same windows, and the per-frame
  scores, boxes and response tracks of generated clips in fp32 and bf16.
- ``compile``: ``torch.compile`` (``dynamic=False``) of the backbone and of the stages at ONE batch size per
  precision (bf16, then tf32), the query embedded eagerly; compile seconds, graphs, recompiles and graph breaks,
  ``eager_fallback`` when dynamo gave up; rows that would start after ``--deadline-s`` are skipped.

``--quick`` uses the tiny config, batches 1-2, one clip and the ``eager`` compile backend: seconds on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import logging
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

import prvql
from prvql.config import Config, load_config
from prvql.data.transforms import prepare_query
from prvql.infer.postprocess import build_postprocessor
from prvql.infer.predictor import ClipQuery, build_predictor
from prvql.infer.trained_model import load_inference_model
from prvql.model import build_prvql
from prvql.model.head import AnchorHead

PRECISIONS = ("fp32", "tf32", "bf16")
PACKAGES = ("torch", "torchvision", "timm", "numpy", "scipy", "scikit-image", "safetensors", "PyYAML", "av")


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


def _clean_baseline(device: torch.device) -> int:
    """Free what is unreferenced, reset the peak counter and return the bytes still allocated (CUDA; 0 on CPU)."""
    gc.collect()
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _peak_mb(device: torch.device, baseline: int) -> float | None:
    """CUDA peak allocated since :func:`_clean_baseline`, above its baseline; None on the CPU (the ``inference``
    and ``window_memory`` sections measure resident-set peaks)."""
    if device.type != "cuda":
        return None
    return round((torch.cuda.max_memory_allocated(device) - baseline) / 2**20, 1)


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


@contextlib.contextmanager
def precision(device: torch.device, name: str) -> Iterator[None]:
    """Run the block in ``fp32`` (TF32 off for matmuls and cuDNN), ``tf32`` (on for both) or ``bf16`` (autocast,
    TF32 off); the previous TF32 flags are restored after."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = name == "tf32"
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=name == "bf16"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def paper_model(cfg: Config, device: torch.device) -> torch.nn.Module:
    """A model of ``cfg`` with random weights, head outputs redrawn (std 0.05), batch norms folded, on ``device``."""
    torch.manual_seed(0)
    model = build_prvql(cfg.model)
    for head in (m for m in model.modules() if isinstance(m, AnchorHead)):
        for conv in (head.cls_out, head.reg_out):
            torch.nn.init.normal_(conv.weight, std=0.05)
    return model.to(device).fuse_for_inference()


def _model(args: argparse.Namespace) -> tuple[Config, torch.nn.Module]:
    cfg = load_config(args.config, ["model.backbone.weights=null"])
    return cfg, paper_model(cfg, args.torch_device)


def _tf32_flags() -> dict:
    flags = {
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    with contextlib.suppress(AttributeError, RuntimeError):
        flags["matmul_fp32_precision"] = torch.backends.cuda.matmul.fp32_precision
        flags["cudnn_conv_fp32_precision"] = torch.backends.cudnn.conv.fp32_precision
    return flags


def _driver() -> str | None:
    try:
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        return subprocess.run(query, capture_output=True, text=True, timeout=20, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def bench_environment(args: argparse.Namespace) -> dict:
    """What the numbers of this run depend on: device, driver, versions, TF32 defaults, thread count."""
    device = args.torch_device
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    out = {
        "device": device_name(device),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "prvql_imported_from": str(Path(prvql.__file__).resolve().parent),
        "packages": versions,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "tf32_defaults": _tf32_flags(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(
            driver=_driver(),
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return out


def _inputs(cfg: Config, device: torch.device, windows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames [windows * T, 3, S, S] and queries [windows, 3, S, S], standard normal (like normalised images)."""
    t, s = cfg.model.num_frames, cfg.model.input_size
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(windows * t, 3, s, s, generator=generator)
    return frames.to(device), torch.randn(windows, 3, s, s, generator=generator).to(device)


def measure(
    model: torch.nn.Module,
    cfg: Config,
    device: torch.device,
    windows: int,
    mode: str,
    repeats: int,
    embed: Callable | None = None,
    stages: Callable | None = None,
) -> dict:
    """Frames/s of the backbone, the stages and end to end for one batch of ``windows`` windows in precision
    ``mode``; ``embed`` / ``stages`` replace ``model.embed`` (frames only: the query is embedded eagerly) and
    ``model.forward_embedded`` (e.g. compiled). Peak memory above the model (CUDA)."""
    embed = embed or model.embed
    stages = stages or model.forward_embedded
    t = cfg.model.num_frames
    baseline = _clean_baseline(device)
    with torch.inference_mode(), precision(device, mode):
        frames, query = _inputs(cfg, device, windows)  # inference tensors, as in every compiled call
        query_feats = model.embed(query)
        video = embed(frames)
        video = video.view(windows, t, *video.shape[1:])
        backbone = _time(lambda: embed(frames), device, repeats)
        stage = _time(lambda: stages(video, query_feats), device, repeats)

        def end_to_end() -> object:
            feats = embed(frames)
            return stages(feats.view(windows, t, *feats.shape[1:]), model.embed(query))

        e2e = _time(end_to_end, device, repeats)
    row = {
        "windows": windows,
        "frames": windows * t,
        "precision": mode,
        "backbone_fps": round(windows * t / backbone, 1),
        "stages_fps": round(windows * t / stage, 1),
        "end_to_end_fps": round(windows * t / e2e, 1),
        "peak_memory_mb_above_model": _peak_mb(device, baseline),
    }
    return row


def stage_host_syncs(model: torch.nn.Module, cfg: Config, device: torch.device) -> int | None:
    """Host synchronisations of one stage forward (``torch.cuda.set_sync_debug_mode``); None off CUDA."""
    if device.type != "cuda":
        return None
    frames, query = _inputs(cfg, device, 1)
    with torch.inference_mode():
        video, query_feats = model.embed(frames), model.embed(query)
        video = video.view(1, cfg.model.num_frames, *video.shape[1:])
        torch.cuda.synchronize(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                model.forward_embedded(video, query_feats)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def bench_throughput(args: argparse.Namespace) -> dict:
    """Eager rows per precision and batch; a batch that runs out of memory ends its precision's rows."""
    cfg, model = _model(args)
    device = args.torch_device
    syncs = stage_host_syncs(model, cfg, device)
    for mode in PRECISIONS:
        for windows in [1, 2] if args.quick else [1, 2, 4, 8]:
            try:
                args.progress.add(measure(model, cfg, device, windows, mode, repeats=1 if args.quick else 3))
            except torch.cuda.OutOfMemoryError as exc:
                args.progress.add({"windows": windows, "precision": mode, "error": f"out of memory: {exc}"[:300]})
                del exc
                _clean_baseline(device)
                break
    return {"config": args.config, "stage_forward_host_syncs": syncs, "rows": args.progress.rows}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def window_differences(model: torch.nn.Module, cfg: Config, device: torch.device) -> dict:
    """Largest difference of the final logits and boxes of two windows, bf16 and TF32 against full fp32."""
    frames, query = _inputs(cfg, device, 2, seed=1)
    t = cfg.model.num_frames
    outputs = {}
    for mode in PRECISIONS:
        with torch.inference_mode(), precision(device, mode):
            video = model.embed(frames)
            out = model.forward_embedded(video.view(2, t, *video.shape[1:]), model.embed(query))
        outputs[mode] = {k: out[k].float() for k in ("logits", "boxes")}
    ref = outputs["fp32"]
    return {
        "logit_scale": ref["logits"].abs().max().item(),
        "box_scale": ref["boxes"].abs().max().item(),
        **{f"max_{k}_abs_diff_{mode}": _max_diff(outputs[mode][k], ref[k]) for mode in ("bf16", "tf32") for k in ref},
    }


def synthetic_clip(seed: int, num_frames: int) -> tuple[np.ndarray, int, tuple[float, float, float, float]]:
    """A generated clip (``prvql.synth``, held-out pictures) and the largest sighting of its first target:
    frames uint8 [N, 240, 320, 3], that frame's index and its box (xyxy pixels), where the query crop comes from."""
    # imported here: should the generator miss a package on a GPU machine, only this comparison fails
    from prvql.synth.scene import SynthOptions, make_scene, render, scene_time

    opts = SynthOptions(num_frames=num_frames, video_backgrounds=0.0)  # pictures only: real footage needs PyAV
    step = round(opts.video_fps / opts.clip_fps)
    scene = make_scene(np.random.default_rng(seed), opts, "heldout", scene_time(opts, (num_frames - 1) * step + 1))
    rendered = [render(scene, scene_time(opts, j * step), True, opts) for j in range(num_frames)]
    sightings = [
        ((box[2] - box[0]) * (box[3] - box[1]), j, box) for j, (_, boxes) in enumerate(rendered) if (box := boxes[0])
    ]
    if not sightings:
        raise RuntimeError(f"the generated clip of seed {seed} never shows its target")
    _, frame, box = max(sightings)
    return np.stack([f for f, _ in rendered]), frame, tuple(box)


def _demo_or_random(args: argparse.Namespace) -> tuple[Config, torch.nn.Module, str]:
    """The shipped demo model (trained: its scores have real peaks) if it loads here, else the random model."""
    try:
        cfg, model = load_inference_model(None, None)
        return cfg, model.to(args.torch_device), "demo"
    except Exception as exc:  # e.g. its backbone's package is not installed on this machine
        print(f"bf16_vs_fp32: demo model not loaded ({type(exc).__name__}: {exc}); random weights", file=sys.stderr)
        cfg, model = _model(args)
        return cfg, model, f"random ({type(exc).__name__})"


def track_agreement(args: argparse.Namespace, clips: int, num_frames: int) -> dict:
    """Per-frame scores, boxes and response tracks of ``clips`` generated clips, fp32 against bf16 autocast.

    With random weights the score curve is nearly flat and every track is the whole clip, which any two curves
    agree on; so both curves are then stretched by the same affine map (the fp32 curve's minimum -> 0, maximum -> 1)
    before post-processing: a curve with a real peak, on which bf16's differences can move the track.
    """
    cfg, model, weights = _demo_or_random(args)
    postprocess = build_postprocessor(cfg.inference)
    rows = []
    for seed in range(clips):
        frames, crop_frame, box = synthetic_clip(seed, num_frames)
        query = prepare_query(frames[crop_frame], box, cfg.model.input_size, cfg.data.released_preprocessing)
        results = []
        for bf16 in (False, True):
            cfg.inference.bf16 = bf16
            predictor = build_predictor(cfg, model, args.torch_device)
            results.append(predictor.predict(iter(frames), ClipQuery("q", query, len(frames))))
        cfg.inference.bf16 = False
        fp32, bf16 = results
        low, high = float(fp32.scores.min()), float(fp32.scores.max())
        stretch = weights != "demo" and high > low
        tracks = []
        for result in results:
            scores = (result.scores - low) / (high - low) if stretch else result.scores
            track, _ = postprocess(np.clip(scores, 0.0, 1.0).astype(np.float32), result.boxes)
            tracks.append(track.extent if len(track) else None)
        rows.append(
            {
                "seed": seed,
                "frames": len(frames),
                "max_score_abs_diff": float(np.abs(fp32.scores - bf16.scores).max()),
                "max_box_abs_diff_px": float(np.abs(fp32.boxes - bf16.boxes).max()),
                "score_min_median_max": [low, float(np.median(fp32.scores)), high],
                "scores_stretched": stretch,
                "track_fp32": tracks[0],
                "track_bf16": tracks[1],
                "whole_clip": tracks[0] == (0, len(frames) - 1),
            }
        )
    telling = [r for r in rows if not r["whole_clip"] and r["track_fp32"] is not None]
    return {
        "weights": weights,
        "clips": rows,
        "same_tracks": f"{sum(r['track_fp32'] == r['track_bf16'] for r in rows)}/{len(rows)}",
        "same_tracks_not_whole_clip": f"{sum(r['track_fp32'] == r['track_bf16'] for r in telling)}/{len(telling)}",
    }


def bench_bf16_vs_fp32(args: argparse.Namespace) -> dict:
    cfg, model = _model(args)
    windows = window_differences(model, cfg, args.torch_device)
    del model
    _clean_baseline(args.torch_device)
    return {
        "config": args.config,
        "windows": windows,
        "tracks": track_agreement(args, clips=1 if args.quick else 4, num_frames=24 if args.quick else 90),
    }


class _DynamoLog(logging.Handler):
    """Counts dynamo's recompilations and whether it hit its recompile limit (then it runs the code eagerly)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.recompiles = 0
        self.limit_hit = False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.recompiles += message.startswith("Recompiling function")
        self.limit_hit |= "recompile_limit" in message or "cache_size_limit" in message


@contextlib.contextmanager
def _dynamo_log() -> Iterator[_DynamoLog]:
    handler = _DynamoLog()
    logger = logging.getLogger("torch._dynamo")
    torch._logging.set_logs(recompiles=True)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        torch._logging.set_logs()


def compile_row(model: torch.nn.Module, cfg: Config, args: argparse.Namespace, mode: str) -> dict:
    """Compile the backbone and the stages afresh for one batch size in precision ``mode``; time them."""
    from torch._dynamo.utils import counters

    device, windows, t = args.torch_device, args.compile_windows, cfg.model.num_frames
    torch._dynamo.reset()
    counters.clear()
    options = {"dynamic": False, "backend": args.compile_backend}
    embed, stages = torch.compile(model.embed, **options), torch.compile(model.forward_embedded, **options)
    with _dynamo_log() as log, torch.inference_mode(), precision(device, mode):
        frames, query = _inputs(cfg, device, windows)
        query_feats = model.embed(query)  # eagerly: the compiled backbone sees one shape only
        _sync(device)
        start = time.perf_counter()
        video = embed(frames)
        _sync(device)
        embed_s = time.perf_counter() - start
        video = video.view(windows, t, *video.shape[1:])
        stages(video, query_feats)
        _sync(device)
        stages_s = time.perf_counter() - start - embed_s
        del frames, query, query_feats, video
        row = measure(model, cfg, device, windows, mode, repeats=1 if args.quick else 3, embed=embed, stages=stages)
    row.update(
        compile=args.compile_backend,
        first_call_s={"backbone": round(embed_s, 1), "stages": round(stages_s, 1)},
        graphs=counters["stats"]["unique_graphs"],
        recompiles=log.recompiles,
        graph_breaks=sum(counters["graph_break"].values()),
        eager_fallback=log.limit_hit,
    )
    if log.limit_hit:
        row["note"] = "eager fallback: dynamo hit its recompile limit, these are (partly) eager numbers"
    return row


def bench_compile(args: argparse.Namespace) -> dict:
    """One compile row per precision (bf16, then tf32); a row that would start after the deadline is skipped."""
    cfg, model = _model(args)
    for mode in ("bf16", "tf32"):
        if args.deadline is not None and time.perf_counter() > args.deadline:
            args.progress.add({"precision": mode, "skipped": f"would start after --deadline-s {args.deadline_s:g}"})
            continue
        args.progress.add(compile_row(model, cfg, args, mode))
    torch._dynamo.reset()
    return {"config": args.config, "windows": args.compile_windows, "rows": args.progress.rows}
