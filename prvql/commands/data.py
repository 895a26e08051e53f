"""Prepare Ego4D VQ2D data: cut the 5 fps clips from the canonical videos, cache training frames as JPEG.

Subcommands:
  extract-clips  --annotations vq_train.json vq_val.json --videos VIDEO_DIR --out CLIPS_DIR
  cache-frames   --annotations vq_train.json --clips CLIPS_DIR --out FRAMES_DIR --window 30
"""

from __future__ import annotations

import argparse
from pathlib import Path

MAX_WORKERS = 256
MAX_SIDE = 8192  # --downscale-height, --short-side
MAX_WINDOW = 10_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="STEP", required=True)

    ext = sub.add_parser("extract-clips", help="write <clip_uid>.mp4 at clip_fps for every annotated clip")
    ext.add_argument("--annotations", nargs="+", required=True, help="official VQ2D JSON files (any split)")
    ext.add_argument("--videos", required=True, help="folder of canonical <video_uid>.mp4 videos")
    ext.add_argument("--out", required=True, help="output folder for the clips")
    ext.add_argument("--downscale-height", type=int, default=None, help="resize clips to this height (pixels)")
    ext.add_argument("--workers", type=int, default=1, help="parallel processes")
    ext.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    cache = sub.add_parser("cache-frames", help="write the frames training reads as JPEG")
    cache.add_argument("--annotations", nargs="+", required=True, help="VQ2D (or EgoTracks) JSON files")
    cache.add_argument("--clips", required=True, help="folder of <clip_uid>.mp4 clips")
    cache.add_argument("--out", required=True, help="output folder (FRAMES_DIR/<clip_uid>/frame_%%07d.jpg)")
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
    from prvql.data.annotations import load_annotations
    from prvql.errors import PRVQLError
    from prvql.paths import check_input_dir, check_output_dir

    check_arguments(args)
    check_output_dir(args.out, "--out")
    sets = [load_annotations(path) for path in args.annotations]
    if args.data_command == "extract-clips":
        check_input_dir(args.videos, "--videos folder of <video_uid>.mp4")
        if Path(args.out).resolve() == Path(args.videos).resolve():
            raise PRVQLError("--out: must differ from --videos (a clip could overwrite a video of the same name)")
        from prvql.data.extract import extract_clips, extract_jobs

        jobs = extract_jobs(sets)
        report = extract_clips(
            jobs, args.videos, args.out, args.downscale_height, workers=args.workers, progress=not args.no_progress
        )
        print(
            f"{len(jobs)} clips: {len(report.written)} written, {len(report.skipped)} already valid, "
            f"{len(report.failed)} failed"
        )
        for clip_uid, reason in sorted(report.failed.items()):
            print(f"  {clip_uid}: {reason}")
        return 1 if report.failed else 0

    from prvql.data.frames import cache_frames

    check_input_dir(args.clips, "--clips folder of <clip_uid>.mp4")
    records = [r for s in sets for r in s.valid_records()]
    report = cache_frames(
        records,
        args.clips,
        args.out,
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
