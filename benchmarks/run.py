"""Every measurement this machine can run, one section after another (prints JSON; benchmarks/README.md).

    python -m benchmarks                                  # every section for the device (CUDA when available)
    python -m benchmarks --quick                          # the same at toy sizes: plumbing only, minutes on a CPU
    python -m benchmarks --sections e2e --output benchmarks/results/cpu_e2e.json
    python -m benchmarks --device cuda --output gpu.json  # the accelerator sections

Run from the repository root. Random weights everywhere: no weights file or data set is read (``decode`` uses the
shipped demo model). Numbers here are measurements, not tests: each section prints its JSON as it finishes, and the
whole report (machine, torch, load average, every section, wall times) is printed at the end and written to
``--output``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Section:
    """One measurement: ``function`` (``module:name`` in this package, taking the parsed options) and the devices
    it runs on by default (a CPU-only section measures the CPU whatever ``--device`` says, so it is refused with
    CUDA)."""

    function: str
    devices: tuple[str, ...]
    summary: str
    cpu_only: bool = False


SECTIONS = {
    "inference": Section(
        "prvql.infer.benchmark:benchmark_inference",
        ("cpu", "cuda"),
        "the Predictor on N- and 2N-frame clips with Q queries: speed, backbone once per frame, memory flat",
    ),
    "window_memory": Section(
        "prvql.infer.benchmark:benchmark_window_memory",
        ("cpu", "cuda"),
        "peak memory of one window (T frames + the query) above the model",
    ),
    "training_step": Section("benchmarks.train_step:bench_training_step", ("cpu", "cuda"), "one training iteration"),
    "backbone": Section("benchmarks.cpu_speed:bench_backbone", ("cpu",), "plain timm ViT-B/14 vs ours", True),
    "stages": Section(
        "benchmarks.cpu_speed:bench_stages", ("cpu",), "after the backbone, before/after each exact speed-up", True
    ),
    "queries": Section("benchmarks.cpu_speed:bench_queries", ("cpu",), "Q = 1 and 3 queries on one window", True),
    "decode": Section("benchmarks.cpu_speed:bench_decode", ("cpu",), "1080p decoding and `locate` end to end", True),
    "e2e": Section("benchmarks.cpu_speed:bench_e2e", ("cpu",), "one window end to end per fresh process", True),
    "throughput": Section(
        "benchmarks.gpu:bench_throughput", ("cuda",), "backbone and stage frames/s per batch, fp32/bf16, compile"
    ),
    "bf16_vs_fp32": Section("benchmarks.gpu:bench_bf16_vs_fp32", ("cuda",), "bf16 autocast against fp32"),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    listing = "\n".join(
        f"  {name:14s} {s.summary} ({'CPU only' if s.cpu_only else ', '.join(s.devices)})"
        for name, s in SECTIONS.items()
    )
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        epilog="sections (default devices):\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sections", help="comma-separated subset (default: every section for the device)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--quick", action="store_true", help="toy sizes, one round: checks the plumbing only")
    parser.add_argument("--output", type=Path, help="also write the report here (JSON)")
    parser.add_argument(
        "--config",
        help="model config of inference, window_memory, training_step, throughput, "
        "bf16_vs_fp32 (default: prvql_vitb14; tiny with --quick)",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the CPU sections (default 3; 1 with --quick)")
    parser.add_argument("--frames", type=int, help="inference: N, the clips are N and 2N frames (default 60; 12)")
    parser.add_argument("--images", type=int, help="backbone: images per call (default 2; 1 with --quick)")
    parser.add_argument("--queries-depth", type=int, default=1, help="queries: ViT-B blocks kept (default 1)")
    parser.add_argument("--e2e-depth", type=int, default=12, help="e2e: ViT-B blocks kept (12 = all; 1 with --quick)")
    parser.add_argument("--video-seconds", type=float, help="decode: length of the 1080p video (default 6; 1)")
    parser.add_argument("--no-compile", action="store_true", help="throughput: skip the torch.compile rows")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "config": "tiny" if quick else "prvql_vitb14",
        "rounds": 1 if quick else 3,
        "frames": 12 if quick else 60,
        "images": 1 if quick else 2,
        "video_seconds": 1.0 if quick else 6.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for option in ("rounds", "frames", "images", "queries_depth", "e2e_depth"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')}: must be >= 1 (got {getattr(args, option)})")
    if args.video_seconds <= 0:
        parser.error(f"--video-seconds: must be > 0 (got {args.video_seconds})")

    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        args.torch_device = torch.device(args.device)
    except RuntimeError as exc:
        parser.error(f"--device: {exc}")
    if args.torch_device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device: CUDA is not available on this machine")
    kind = args.torch_device.type
    if args.sections is None:
        args.sections = [name for name, s in SECTIONS.items() if kind in s.devices]
    else:
        args.sections = [s for s in args.sections.split(",") if s]
        unknown = [s for s in args.sections if s not in SECTIONS]
        if unknown or not args.sections:
            parser.error(f"--sections: unknown {unknown or 'empty list'} (known: {', '.join(SECTIONS)})")
        cpu_only = [s for s in args.sections if SECTIONS[s].cpu_only and kind != "cpu"]
        if cpu_only:
            parser.error(f"--sections: {', '.join(cpu_only)} measure the CPU only; run them with --device cpu")
    return args


def run_section(name: str, args: argparse.Namespace) -> object:
    """Call one section with the options it takes."""
    module, function = SECTIONS[name].function.split(":")
    fn = getattr(importlib.import_module(module), function)
    if name == "inference":
        return fn(args.config, [], args.device, "fp32", 3, args.frames, *((60, 80) if args.quick else (360, 480)))
    if name == "window_memory":
        return fn(args.config, args.device, "fp32", *((60, 80) if args.quick else (540, 720)))
    return fn(args)


def machine() -> dict:
    import torch

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result: dict = {
        **machine(),
        "device": args.device,
        "quick": args.quick,
        "sections": args.sections,
        "section_wall_s": {},
    }
    started = time.perf_counter()
    for name in args.sections:
        print(f"benchmarks: {name} ...", file=sys.stderr, flush=True)
        section_start = time.perf_counter()
        result[name] = run_section(name, args)
        result["section_wall_s"][name] = round(time.perf_counter() - section_start, 1)
        print(json.dumps({name: result[name]}, indent=1), flush=True)
    result["load_average_at_end"] = os.getloadavg()
    result["wall_s"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=1)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.output.with_name(args.output.name + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.output)
    return 0
