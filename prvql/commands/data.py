"""Prepare Ego4D VQ2D data: cut the 5 fps clips from the canonical videos, cache training frames as JPEG.

Subcommands:
  extract-clips  --annotations vq_train.json vq_val.json --videos VIDEO_DIR --output CLIPS_DIR
  cache-frames   --annotations vq_train.json --clips CLIPS_DIR --output FRAMES_DIR --window 30
(``--out`` is the deprecated spelling of ``--output``.)
"""

from __future__ import annotations

import argparse

from prvql.commands.options import add_output_option

MAX_WORKERS = 256
MAX_SIDE = 8192  # --downscale-height, --short-side
MAX_WINDOW = 10_000

# library error field -> the option that gave it (prvql.cli prints the option)
FLAGS = {"output_dir": "--output", "videos_dir": "--videos", "clips_dir": "--clips"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="STEP", required=True)

    ext = sub.add_parser("extract-clips", help="write <clip_uid>.mp4 at clip_fps for every annotated clip")
    ext.add_argument("--annotations", nargs="+", required=True, help="official VQ2D JSON files (any split)")
    ext.add_argument("--videos", required=True, help="folder of canonical <video_uid>.mp4 videos")
    add_output_option(ext, "output folder for the clips", deprecated="--out")
    ext.add_argument("--downscale-height", type=int, default=None, help="resize clips to this height (pixels)")
    ext.add_argument("--workers", type=int, default=1, help="parallel processes")
    ext.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    cache = sub.add_parser("cache-frames", help="write the frames training reads as JPEG")
    cache.add_argument("--annotations", nargs="+", required=True, help="VQ2D (or EgoTracks) JSON files")
    cache.add_argument("--clips", required=True, help="folder of <clip_uid>.mp4 clips")
    add_output_option(cache, "output folder (FRAMES_DIR/<clip_uid>/frame_%%07d.jpg)", deprecated="--out")
    cache.add_argument("--window", type=int, default=30, help="frames per training window (model.num_frames)")
    cache.add_argument("--short-side", type=int, default=None, help="resize so the short side has this length")
    cache.add_argument("--quality", type=int, default=90, help="JPEG quality")
    cache.add_argument("--workers", type=int, default=1, help="parallel processes")
    cache.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse values that make no sense before any file is read.

    Raises:
        PRVQLError: naming the option and the value.
    """
    from prvql.commands.options import check_range

    bounded = {"--workers": (args.workers, MAX_WORKERS)}
    if args.data_command == "extract-clips":
        bounded["--downscale-height"] = (args.downscale_height, MAX_SIDE)
    else:
        bounded.update({"--window": (args.window, MAX_WINDOW), "--short-side": (args.short_side, MAX_SIDE)})
        bounded["--quality"] = (args.quality, 100)
    for option, (value, most) in bounded.items():
        check_range(option, value, 1, most)


def run(args: argparse.Namespace) -> int:
    from prvql.data.extract import extract_annotated_clips
    from prvql.data.frames import cache_annotated_frames

    check_arguments(args)
    if args.data_command == "extract-clips":
        report = extract_annotated_clips(
            args.annotations,
            args.videos,
            args.output,
            downscale_height=args.downscale_height,
            workers=args.workers,
            progress=not args.no_progress,
        )
        print(
            f"{report.clips} clips: {len(report.written)} written, {len(report.skipped)} already valid, "
            f"{len(report.failed)} failed"
        )
    else:
        report = cache_annotated_frames(
            args.annotations,
            args.clips,
            args.output,
            window=args.window,
            short_side=args.short_side,
            quality=args.quality,
            workers=args.workers,
            progress=not args.no_progress,
        )
        print(f"{report.clips} clips cached, {report.written} frames written, {len(report.failed)} failed")
    for clip_uid, reason in sorted(report.failed.items()):
        print(f"  {clip_uid}: {reason}")
    return 1 if report.failed else 0
