"""Draw one query's predicted and ground-truth response tracks on its clip (an mp4), and its score curve.

The video shows the searched frames 0 .. query_frame - 1 and then the query frame, at the clip's rate: the
prediction in green, the ground truth in red, the visual crop in the top-left corner. When ``prvql predict``'s
per-query cache holds this query (``PREDICTIONS.cache/<key>.npz``, or --cache), the best box of every frame is
drawn in grey and the score curve goes to ``OUTPUT`` with the suffix ``.scores.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prvql.commands.options import add_output_option

# library error field -> the option that gave it (prvql.cli prints the option)
FLAGS = {"output": "--output", "clips_dir": "--clips", "cache_dir": "--cache", "margin": "--margin"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", required=True, type=Path, help="Ego4D VQ2D annotation file")
    parser.add_argument("--predictions", required=True, type=Path, help="challenge predictions JSON")
    parser.add_argument("--clips", required=True, type=Path, help="folder of <clip_uid>.mp4")
    parser.add_argument("--query", required=True, help="query key: <annotation_uid>_<query_set>")
    add_output_option(parser, "mp4 to write")
    parser.add_argument("--cache", type=Path, help="per-query score folder (default: PREDICTIONS.cache)")
    parser.add_argument("--margin", type=int, help="only frames within this many of either track (default: all)")


def run(args: argparse.Namespace) -> int:
    from prvql.infer.visualize import visualize_query

    drawn = visualize_query(
        args.annotations,
        args.predictions,
        args.clips,
        args.query,
        args.output,
        cache_dir=args.cache,
        margin=args.margin,
    )
    print(
        f"wrote {drawn.video}: frames {drawn.first_frame}-{drawn.last_frame} ({drawn.frames}), "
        f"prediction {drawn.predicted}, truth {drawn.ground_truth}"
    )
    if drawn.plot is not None:
        print(f"wrote {drawn.plot}")
    return 0
