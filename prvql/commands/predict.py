"""Run a trained model over Ego4D clips and write the VQ2D challenge predictions JSON.

Every valid query set is searched over the frames before its query frame; the backbone runs once per clip frame
whatever the number of queries on the clip. Per-query score curves are cached in ``OUTPUT.cache/<key>.npz`` as
clips finish (``--resume`` skips the cached ones; ``prvql visualize`` and ``prvql locate``-style plots read them).
A missing or unreadable clip is reported and its queries are written empty; the run goes on. ``--max-clips N``
searches only the first N clips (in file order, counting clips with a valid query set): a quick sample, whose
other queries are written empty.

Several processes share the clips under torchrun (rank r takes clips i with i % world == r), e.g.
``torchrun --nproc_per_node 8 -m prvql predict ...``; rank 0 writes the file when every rank has finished.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prvql.commands.options import (
    MODEL_FLAGS,
    add_model_options,
    add_output_option,
    add_override_option,
    add_process_device_option,
)

# library error field -> the option that gave it (prvql.cli prints the option)
FLAGS = {
    **MODEL_FLAGS,
    "output": "--output",
    "cache_dir": "--cache",
    "clips_dir": "--clips",
    "max_clips": "--max-clips",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument("--annotations", required=True, type=Path, help="Ego4D VQ2D file, e.g. vq_val.json")
    parser.add_argument("--clips", required=True, type=Path, help="folder of <clip_uid>.mp4 (5 fps clips)")
    add_output_option(parser, "predictions JSON to write")
    parser.add_argument("--cache", type=Path, help="per-query score folder (default: OUTPUT.cache)")
    parser.add_argument("--resume", action="store_true", help="reuse cached per-query results")
    parser.add_argument(
        "--max-clips", type=int, metavar="N", help="search only the first N clips (file order; a sample)"
    )
    add_process_device_option(parser)
    add_override_option(parser, "inference.windows_per_batch=8")


def run(args: argparse.Namespace) -> int:
    from prvql.infer.challenge import predict_annotation_file

    done = predict_annotation_file(
        args.annotations,
        args.clips,
        args.output,
        config=args.config,
        weights=args.weights,
        overrides=args.overrides,
        cache_dir=args.cache,
        resume=args.resume,
        max_clips=args.max_clips,
        device=args.device,
    )
    if done is None:  # not rank 0: rank 0 writes the file and reports
        return 0
    failed = done.failed_clips
    print(
        f"wrote {done.output}: {done.predicted} of {done.valid} valid query sets predicted"
        + (f"; {len(failed)} clips missing or unreadable: {', '.join(failed[:5])}" if failed else "")
    )
    return 0
