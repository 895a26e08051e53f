"""Find the last occurrence of a visual query in any video and write track.json, scores.png and track.mp4.

The video (any frame rate) is sampled at the model's rate (``inference.fps``, 5 fps as in Ego4D clips). The query
is either an image file (the whole image is the object; the whole video is searched) or a box ``x,y,w,h`` in
pixels on frame ``--query-frame`` of the video (a source-video frame index; the frames before it are searched).

Outputs in ``--output``:
  track.json  the response track (model-fps frame, source frame, time in seconds, xyxy box in the video's pixels,
              score) and the whole per-frame score curve with its best box per frame;
  scores.png  the score curve with the chosen peak, both thresholds and the track marked;
  track.mp4   the searched frames at the model's rate with the track (green), the best box of every frame (grey)
              and the query crop in the corner.
Without --config and --weights the demo model shipped with the package is used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from prvql.commands.options import (
    MODEL_FLAGS,
    add_device_option,
    add_model_options,
    add_output_option,
    add_override_option,
)
from prvql.errors import PRVQLError

# library error field (QueryError.field among them) -> the option that gave it (prvql.cli prints the option)
FLAGS = {**MODEL_FLAGS, "output": "--output", "frame": "--query-frame", "box": "--query-box"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", required=True, type=Path, help="video file to search")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--query", type=Path, help="image of the object (the whole image is the query crop)")
    query.add_argument("--query-frame", type=int, help="source-video frame index holding the query box")
    parser.add_argument("--query-box", help="x,y,w,h of the object on --query-frame, in pixels of the video")
    add_model_options(parser)
    add_output_option(parser, "output folder")
    add_device_option(parser)
    add_override_option(parser, "inference.peak_ratio=0.8")
    parser.add_argument("--no-video", action="store_true", help="skip track.mp4")


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x,y,w,h"`` -> xyxy pixels; malformed text or a zero-size box raises :class:`PRVQLError`."""
    parts = text.replace(" ", "").split(",")
    try:
        x, y, w, h = (float(p) for p in parts)
    except ValueError:
        raise PRVQLError(f"--query-box: expected x,y,w,h (four numbers), got {text!r}") from None
    if not all(np.isfinite([x, y, w, h])):
        raise PRVQLError(f"--query-box: values must be finite (got {text!r})")
    if w <= 0 or h <= 0:
        raise PRVQLError(f"--query-box: width and height must be > 0 (got {text!r})")
    import torch

    from prvql.boxes import xywh_to_xyxy

    x1, y1, x2, y2 = xywh_to_xyxy(torch.tensor([x, y, w, h], dtype=torch.float64)).tolist()
    return x1, y1, x2, y2


def run(args: argparse.Namespace) -> int:
    from prvql.data.images import read_image
    from prvql.data.video import VideoReader
    from prvql.infer.locate import Query, locate_video
    from prvql.infer.trained_model import load_inference_model, resolve_device
    from prvql.paths import check_output_dir

    if (args.query_frame is None) != (args.query_box is None):
        raise PRVQLError("--query-frame and --query-box go together (or give --query IMAGE instead)")
    box = parse_box(args.query_box) if args.query_box is not None else None
    check_output_dir(args.output, "--output")
    with VideoReader(args.video):  # a missing or unreadable video fails before the model loads
        pass
    if args.query is not None:
        read_image(args.query, "query image")  # so does a bad image
        query = Query(frame=0, search="anywhere", crop=args.query)
    else:
        query = Query(frame=args.query_frame, search="before", box=box)
    device = resolve_device(args.device)
    cfg, model = load_inference_model(args.config, args.weights, args.overrides)
    found = locate_video(
        cfg, model, device, args.video, query, args.output, name=str(args.video), render_video=not args.no_video
    )
    if len(found.result.track):
        first, last = found.result.track.extent
        sources, fps = found.info.sources, found.info.fps
        print(
            f"track: frames {first}-{last} (source {sources[first]}-{sources[last]}, "
            f"{sources[first] / fps:.2f}-{sources[last] / fps:.2f} s), "
            f"peak score {found.result.window.peak_score:.3f}"
        )
    print("wrote " + ", ".join(str(p) for p in found.written))
    return 0
