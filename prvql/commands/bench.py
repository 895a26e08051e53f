"""Measure inference speed and memory of the Predictor on a generated clip with random weights (prints JSON).

Each run searches a clip of random frames for Q queries whose query frame is the end of the clip, after a
warm-up run. Reported per run: searched frames per second of wall time (Q x frames / s, backbone included) and
clip frames per second, backbone time per frame, stage time per frame and query, decode+preprocess time per
frame, backbone calls and images, and peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the rise of
the process's peak resident set over the run). Two clip lengths (N and 2N frames) show whether memory stays flat
with clip length. The measurement is :func:`prvql.infer.benchmark.benchmark_inference`; every other measurement
of this project is in ``python -m benchmarks`` (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prvql.commands.options import add_device_option, add_override_option, check_range

MAX_FRAMES = 100_000  # N; frames are generated one at a time, so memory does not grow with N
MAX_SIDE = 4096  # --height / --width: the generated clip cycles through a few frames of this size
MAX_QUERIES = 1024


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


def run(args: argparse.Namespace) -> int:
    from prvql.atomic import atomic_write_text
    from prvql.infer.benchmark import benchmark_inference
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
    sizes = (args.queries_per_clip, args.frames, args.height, args.width)
    result = benchmark_inference(args.config, args.overrides, args.device, args.dtype, *sizes)
    text = json.dumps(result, indent=1)
    print(text)
    if args.output is not None:
        atomic_write_text(args.output, text + "\n")
    return 0
