"""Every measurement this machine can run, one section after another (prints JSON; benchmarks/README.md).

    python -m benchmarks                                  # every section for the device (CUDA when available)
    python -m benchmarks --quick                          # the same at toy sizes: plumbing only, minutes on a CPU
    python -m benchmarks --sections e2e --output benchmarks/results/cpu_e2e.json
    python -m benchmarks --device cuda --output gpu.json  # the accelerator sections

Run from the repository root. Random weights everywhere: no weights file or data set is read (``decode`` and
``bf16_vs_fp32`` use the shipped demo model). Numbers here are measurements, not tests: each section prints its JSON
as it finishes, and the whole report (machine, torch, load average, every section, wall times) is printed at the end.

The report is written to ``--output`` (atomically) at the start, after every section and after every row of a
section that measures rows, so that a run stopped at any point leaves what it measured. A section that raises is
recorded (``{"error": ..., "traceback": ..., "rows": [...]}``) and the next one runs; SIGTERM and SIGINT write the
report (``interrupted``) and exit 128 + the signal number; a failed section makes the exit status 1.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable
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
    "environment": Section(
        "benchmarks.gpu:bench_environment",
        ("cpu", "cuda"),
        "GPU, driver, torch / timm / torchvision versions, TF32 flags, where prvql is imported from",
    ),
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
    "memory": Section(
        "benchmarks.memory:bench_memory", ("cpu",), "a second question through a video memory vs --video", True
    ),
    "throughput": Section(
        "benchmarks.gpu:bench_throughput", ("cuda",), "eager backbone / stages / end-to-end frames/s, fp32/TF32/bf16"
    ),
    "bf16_vs_fp32": Section("benchmarks.gpu:bench_bf16_vs_fp32", ("cuda",), "bf16 autocast against fp32"),
    "compile": Section(
        "benchmarks.gpu:bench_compile", ("cuda",), "torch.compile, one batch size: compile s, recompiles, frames/s"
    ),
}


REPORT_NAME = "benchmarks.json"  # the report's name when --output is a folder


class Progress:
    """The rows of the running section: each is printed and kept in the report at once (``on_row`` writes it), so
    that a section stopped half-way keeps what it measured. Sections that measure rows call :meth:`add`."""

    def __init__(self, on_row: Callable[[], None] = lambda: None) -> None:
        self.rows: list[dict] = []
        self._on_row = on_row

    def add(self, row: dict) -> None:
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        self._on_row()


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived (a BaseException, so that no ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
    parser.add_argument("--sections", help="comma-separated subset, run in this order (default: all for the device)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--quick", action="store_true", help="toy sizes, one round: checks the plumbing only")
    parser.add_argument(
        "--output", help=f"write the report here: a .json file, or a folder (then FOLDER/{REPORT_NAME})"
    )
    parser.add_argument(
        "--config",
        help="model config of inference, window_memory, training_step, throughput, bf16_vs_fp32 and compile "
        "(default: prvql_vitb14; tiny with --quick)",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the CPU sections (default 3; 1 with --quick)")
    parser.add_argument("--frames", type=int, help="inference: N, the clips are N and 2N frames (default 60; 12)")
    parser.add_argument("--images", type=int, help="backbone: images per call (default 2; 1 with --quick)")
    parser.add_argument("--queries-depth", type=int, default=1, help="queries: ViT-B blocks kept (default 1)")
    parser.add_argument("--e2e-depth", type=int, default=12, help="e2e: ViT-B blocks kept (12 = all; 1 with --quick)")
    parser.add_argument("--video-seconds", type=float, help="decode: length of the 1080p video (default 6; 1)")
    parser.add_argument("--memory-seconds", type=float, help="memory: length of the 640x360 video (default 120; 6)")
    parser.add_argument(
        "--memory-models",
        default="demo,demo_overlap0,paper",
        help="memory: comma-separated subset of demo,demo_overlap0,paper (default all)",
    )
    parser.add_argument(
        "--memory-storages",
        default="float16,int8",
        help="memory: compact storages compared with float32 (each indexes the video again; 'none' for none)",
    )
    parser.add_argument("--no-compile", action="store_true", help="leave the compile section out")
    parser.add_argument(
        "--deadline-s",
        type=float,
        help="seconds after the start: a section or compile row that would start later is skipped (default none)",
    )
    parser.add_argument("--compile-windows", type=int, help="compile: windows per batch (default 2; 1 with --quick)")
    parser.add_argument(
        "--compile-backend", help="compile: torch.compile backend (default inductor; eager with --quick)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "config": "tiny" if quick else "prvql_vitb14",
        "rounds": 1 if quick else 3,
        "frames": 12 if quick else 60,
        "images": 1 if quick else 2,
        "video_seconds": 1.0 if quick else 6.0,
        "memory_seconds": 6.0 if quick else 120.0,
        "compile_windows": 1 if quick else 2,
        "compile_backend": "eager" if quick else "inductor",
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for option in ("rounds", "frames", "images", "queries_depth", "e2e_depth", "compile_windows"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')}: must be >= 1 (got {getattr(args, option)})")
    if not args.memory_models or not set(args.memory_models.split(",")) <= {"demo", "demo_overlap0", "paper"}:
        parser.error(
            f"--memory-models: a comma-separated subset of demo,demo_overlap0,paper (got {args.memory_models!r})"
        )
    if args.memory_storages != "none" and not set(args.memory_storages.split(",")) <= {"float16", "int8"}:
        parser.error(f"--memory-storages: float16, int8, both or none (got {args.memory_storages!r})")
    if args.video_seconds <= 0:
        parser.error(f"--video-seconds: must be > 0 (got {args.video_seconds})")
    if args.deadline_s is not None and args.deadline_s <= 0:
        parser.error(f"--deadline-s: must be > 0 (got {args.deadline_s})")
    if args.output is not None:
        folder = args.output.endswith("/") or Path(args.output).is_dir()
        args.output = Path(args.output) / REPORT_NAME if folder else Path(args.output)

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
    if args.no_compile:
        args.sections = [s for s in args.sections if s != "compile"]
    args.progress = Progress()
    args.deadline = None  # perf_counter() time, set by main() from --deadline-s
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


def write_report(result: dict, path: Path | None) -> None:
    """Write ``result`` to ``path`` atomically (a temporary file renamed over it); nothing when ``path`` is None."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
    tmp.replace(path)


def _failure(exc: BaseException, rows: list[dict]) -> dict:
    """What a section that raised leaves in the report."""
    return {
        "error": f"{type(exc).__name__}: {exc}".strip()[:2000],
        "traceback": traceback.format_exc().strip().splitlines()[-12:],
        "rows": rows,
    }


def _free_memory(args: argparse.Namespace) -> None:
    """Drop what a failed section left behind (its tensors hang on the traceback until collected)."""
    gc.collect()
    if args.torch_device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.deadline_s is not None:
        args.deadline = started + args.deadline_s
    result: dict = {
        **machine(),
        "device": args.device,
        "quick": args.quick,
        "sections": args.sections,
        "section_wall_s": {},
        "errors": {},
    }

    def save() -> None:
        result["wall_s"] = round(time.perf_counter() - started, 1)
        write_report(result, args.output)

    def on_signal(signum: int, _frame: object) -> None:
        result["interrupted"] = signal.Signals(signum).name
        save()  # first, in case the exception below is swallowed on its way up
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    status, name = 0, None
    try:
        save()
        for name in args.sections:
            if args.deadline is not None and time.perf_counter() > args.deadline:
                result[name] = {"skipped": f"started after --deadline-s {args.deadline_s:g}"}
                save()
                continue
            print(f"benchmarks: {name} ...", file=sys.stderr, flush=True)
            section_start = time.perf_counter()
            args.progress = Progress(save)
            result[name] = {"running": True, "rows": args.progress.rows}
            try:
                result[name] = run_section(name, args)
            except Exception as exc:  # recorded; the next section runs
                result[name] = _failure(exc, args.progress.rows)
                result["errors"][name] = result[name]["error"]
                status = 1
                print(f"benchmarks: {name} failed: {result[name]['error']}", file=sys.stderr, flush=True)
                del exc
                _free_memory(args)
            result["section_wall_s"][name] = round(time.perf_counter() - section_start, 1)
            print(json.dumps({name: result[name]}, indent=1, default=str), flush=True)
            save()
    except Interrupted as stop:
        result["interrupted"] = str(stop)
        if name is not None and isinstance(result.get(name), dict) and result[name].get("running"):
            result[name] = {"error": f"interrupted by {stop}", "rows": args.progress.rows}
            result["errors"][name] = result[name]["error"]
        save()
        print(f"benchmarks: {stop} during {name}; report written", file=sys.stderr, flush=True)
        return 128 + stop.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    result["load_average_at_end"] = os.getloadavg()
    save()
    print(json.dumps(result, indent=1, default=str))
    return status
