"""Embed a video once into a video memory, so that later `prvql locate --memory` questions skip the backbone.

The video is sampled at the model's rate (``inference.fps``) and every sampled frame's features (backbone and
channel reduction) are stored with a thumbnail, the model's identity and the video's, in one HDF5 file
(--output). The file is written as .NAME.partial beside --output and renamed when complete; a killed run is
continued with --resume. Queries may search the partial file while it is written (`prvql locate --memory`
finds it). --follow keeps indexing a video that is still being recorded, until it stops growing.
Without --config and --weights the demo model shipped with the package is used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prvql.commands.options import (
    MODEL_FLAGS,
    add_device_option,
    add_model_options,
    add_output_option,
    add_override_option,
)

STORAGES = ("float32", "float16", "int8")  # as prvql.infer.memory.STORAGES (not imported here: --help stays fast)

# library error field -> the option that gave it
FLAGS = {**MODEL_FLAGS, "output": "--output", "storage": "--storage", "follow": "--follow", "video": "--video"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", required=True, type=Path, help="video file to index")
    add_model_options(parser)
    add_output_option(parser, "memory file to write (HDF5, e.g. kitchen.h5)")
    add_device_option(parser)
    add_override_option(parser, "inference.windows_per_batch=8")
    parser.add_argument(
        "--storage",
        choices=STORAGES,
        default="float32",
        help="feature storage: float32 (default, exact), float16 (half the size) or int8 (a quarter; both "
        "approximate, see docs/INFERENCE.md)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the partial memory a killed run left")
    parser.add_argument(
        "--follow",
        type=float,
        metavar="SECONDS",
        help="the video is still being written: index it as it grows, and stop when it has not grown for SECONDS",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from prvql.data.video import VideoReader
    from prvql.infer.memory import index_video
    from prvql.infer.trained_model import load_inference_model, resolve_device
    from prvql.paths import check_output_file
    from prvql.progress import PhaseBars

    check_output_file(args.output, "--output")
    with VideoReader(args.video):  # a missing or unreadable video fails before the model loads
        pass
    device = resolve_device(args.device)
    cfg, model = load_inference_model(args.config, args.weights, args.overrides)
    with PhaseBars(enabled=not args.no_progress) as progress:
        done = index_video(
            cfg,
            model,
            device,
            args.video,
            args.output,
            storage=args.storage,
            resume=args.resume,
            follow=args.follow,
            progress=lambda stored, total: progress("index", stored, total),
        )
    print(f"indexed {done.frames} frames ({done.added} new) in {done.seconds:.1f} s; wrote {done.path}")
    return 0
