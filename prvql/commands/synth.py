"""Generate a synthetic VQ2D dataset in the official Ego4D layout (videos, 5 fps clips, vq_train/vq_val.json).

Example: ``prvql synth --output data/synth --clips 40 --seed 0 --split-imagery``. The output directory can be used
as ``data.root`` for training and evaluation. (``--out`` is the deprecated spelling of ``--output``.)
"""

from __future__ import annotations

import argparse

from prvql.commands.options import add_output_option

MAX_CLIPS = 100_000
MAX_FRAMES = 10_000  # per clip (33 minutes at 5 fps)
MAX_SIDE = 4096
MAX_PER_CLIP = 64  # queries per clip, query sets per annotation, distractors
MAX_WORKERS = 256


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_output_option(parser, "output directory", deprecated="--out")
    parser.add_argument("--clips", type=int, default=8, help="number of clips in total (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the output is deterministic by seed")
    parser.add_argument("--frames", type=int, default=120, help="5 fps frames per clip (default 120)")
    parser.add_argument("--width", type=int, default=320, help="frame width in pixels (even, >= 64, default 320)")
    parser.add_argument("--height", type=int, default=240, help="frame height in pixels (even, >= 64, default 240)")
    parser.add_argument("--queries-per-clip", type=int, default=3, help="target objects (query sets) per clip")
    parser.add_argument("--query-sets-per-annotation", type=int, default=3, help="query sets per annotation")
    parser.add_argument("--distractors", type=int, default=3, help="look-alikes and other objects per clip")
    parser.add_argument("--val-fraction", type=float, default=0.25, help="share of clips in vq_val.json")
    parser.add_argument(
        "--split-imagery",
        action="store_true",
        help="train episodes never use the held-out photographs; validation episodes use only them",
    )
    parser.add_argument(
        "--fresh-patches",
        type=float,
        default=0.0,
        help="probability that an object is a new random patch of the pool's pictures or clip frames (default 0: "
        "only the fixed objects); more object identities for training",
    )
    parser.add_argument(
        "--generated-objects",
        type=float,
        default=0.0,
        help="probability that a training object is a new procedurally drawn one (shapes, strokes and characters "
        "on a coloured base; never in held-out episodes; default 0)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes for rendering and clip extraction")
    parser.add_argument(
        "--clips-only",
        action="store_true",
        help="render only the 5 fps clip frames and write the clips directly, no canonical videos (6x faster)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse values that make no sense before anything is written.

    Raises:
        PRVQLError: naming the option and the value.
    """
    from prvql.commands.options import check_range
    from prvql.errors import PRVQLError
    from prvql.synth.scene import MIN_FRAME_SIDE

    for option, value, least, most in (
        ("--clips", args.clips, 1, MAX_CLIPS),
        ("--frames", args.frames, 2, MAX_FRAMES),
        ("--width", args.width, MIN_FRAME_SIDE, MAX_SIDE),
        ("--height", args.height, MIN_FRAME_SIDE, MAX_SIDE),
        ("--queries-per-clip", args.queries_per_clip, 1, MAX_PER_CLIP),
        ("--query-sets-per-annotation", args.query_sets_per_annotation, 1, MAX_PER_CLIP),
        ("--distractors", args.distractors, 0, MAX_PER_CLIP),
        ("--workers", args.workers, 1, MAX_WORKERS),
    ):
        check_range(option, value, least, most)
    check_range("--seed", args.seed, 0, 2**63 - 1, shown="[0, 2**63)")
    if args.width % 2 or args.height % 2:
        raise PRVQLError(f"--width and --height must be even (got {args.width}x{args.height})")
    check_range("--val-fraction", args.val_fraction, 0, 1)
    check_range("--fresh-patches", args.fresh_patches, 0, 1)
    check_range("--generated-objects", args.generated_objects, 0, 1)


def run(args: argparse.Namespace) -> int:
    from prvql.paths import check_output_dir
    from prvql.synth.episode import SynthOptions, write_synthetic_dataset

    check_arguments(args)
    check_output_dir(args.output, "--output")
    opts = SynthOptions(
        frame_width=args.width,
        frame_height=args.height,
        num_frames=args.frames,
        targets_per_clip=args.queries_per_clip,
        query_sets_per_annotation=args.query_sets_per_annotation,
        distractors=args.distractors,
        split_imagery=args.split_imagery,
        fresh_patches=args.fresh_patches,
        generated_objects=args.generated_objects,
    )
    report = write_synthetic_dataset(
        args.output,
        args.clips,
        seed=args.seed,
        opts=opts,
        val_fraction=args.val_fraction,
        workers=args.workers,
        progress=not args.no_progress,
        clips_only=args.clips_only,
    )
    print(f"{args.output}: {len(report.written) + len(report.skipped)} clips, {len(report.failed)} failed")
    for clip_uid, reason in report.failed.items():
        print(f"  {clip_uid}: {reason}")
    return 1 if report.failed else 0
