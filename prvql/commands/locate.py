"""Find the last occurrence of a visual query in any video and write track.json, scores.png and track.mp4.

The video (any frame rate) is sampled at the model's rate (``inference.fps``, 5 fps as in Ego4D clips). The query
is either an image file (the whole image is the object; the whole video is searched) or a box ``x,y,w,h`` in
pixels on frame ``--query-frame`` of the video (a source-video frame index). A box query searches the frames before
its frame (``--search before``, the default: where was it last seen before then?) or the whole video
(``--search anywhere``); an image query always searches the whole video. Progress shows on standard error.

Outputs in ``--output``:
  track.json  the response track (model-fps frame, source frame, time in seconds, xyxy box in the video's pixels,
              score) and the whole per-frame score curve with its best box per frame;
  scores.png  the score curve with the chosen peak, both thresholds and the track marked;
  track.mp4   the searched frames at the model's rate with the track (green), the best box of every frame (grey)
              and the query crop in the corner.
Without --config and --weights the demo model shipped with the package is used.

--memory M searches a video memory made by `prvql index` instead of the video (same track, without running the
backbone on the video's frames again); the original video, at the path the memory recorded or given with --video,
is used for a box query's frame and for track.mp4 when present, the memory's thumbnails otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from prvql.commands.options import (
    MODEL_FLAGS,
    add_device_option,
    add_model_options,
    add_output_option,
    add_override_option,
)
from prvql.errors import PRVQLError

if TYPE_CHECKING:
    import torch

    from prvql.config import Config
    from prvql.infer.locate import LocatedVideo, Query
    from prvql.progress import PhaseBars

SEARCH_MODES = ("before", "anywhere")  # as prvql.infer.locate.SEARCH_MODES (not imported here: --help stays fast)

# library error field (QueryError.field among them) -> the option that gave it (prvql.cli prints the option)
FLAGS = {
    **MODEL_FLAGS,
    "output": "--output",
    "frame": "--query-frame",
    "box": "--query-box",
    "search": "--search",
    "memory": "--memory",
    "video": "--video",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", type=Path, help="video file to search (with --memory: its original video)")
    parser.add_argument("--memory", type=Path, help="video memory to search instead (made by `prvql index`)")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--query", type=Path, help="image of the object (the whole image is the query crop)")
    query.add_argument("--query-frame", type=int, help="source-video frame index holding the query box")
    parser.add_argument("--query-box", help="x,y,w,h of the object on --query-frame, in pixels of the video")
    parser.add_argument(
        "--search",
        choices=SEARCH_MODES,
        help="box query: search the frames before --query-frame (default) or anywhere in the video; an image query "
        "searches anywhere",
    )
    add_model_options(parser)
    add_output_option(parser, "output folder")
    add_device_option(parser)
    add_override_option(parser, "inference.peak_ratio=0.8")
    parser.add_argument("--no-video", action="store_true", help="skip track.mp4")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


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


def search_line(query: Query) -> str:
    """What the search covers, as printed before it starts."""
    if query.crop is not None:
        return "search: the whole video (an image query)"
    if query.search == "anywhere":
        return "search: the whole video (--search anywhere)"
    return f"search: the frames before frame {query.frame} (--search before; --search anywhere: the whole video)"


def query_of(args: argparse.Namespace) -> Query:
    """The query the options ask for (checked before the model loads); bad options raise :class:`PRVQLError`."""
    from prvql.data.images import read_image
    from prvql.infer.locate import Query

    if (args.query_frame is None) != (args.query_box is None):
        raise PRVQLError("--query-frame and --query-box go together (or give --query IMAGE instead)")
    if args.query is not None:
        if args.search == "before":
            raise PRVQLError("--search before needs a box query (--query-frame, --query-box); an image has no frame")
        read_image(args.query, "query image")  # a bad image fails before the model loads
        return Query(frame=0, search="anywhere", crop=args.query)
    return Query(frame=args.query_frame, search=args.search or "before", box=parse_box(args.query_box))


def check_source(video: Path | None, memory: Path | None) -> None:
    """A missing or unreadable video or memory fails before the model loads."""
    from prvql.data.video import VideoReader
    from prvql.infer.memory import open_memory

    if video is None and memory is None:
        raise PRVQLError("give --video VIDEO or --memory MEMORY (made by `prvql index`)")
    if memory is not None:
        open_memory(memory).close()
    if video is not None:
        with VideoReader(video):
            pass


def search(
    args: argparse.Namespace,
    cfg: Config,
    model: torch.nn.Module,
    device: torch.device,
    query: Query,
    progress: PhaseBars,
) -> LocatedVideo:
    """``locate_video`` on ``--video``, or ``locate_memory`` on ``--memory``."""
    from prvql.infer.locate import locate_video
    from prvql.infer.memory import locate_memory, open_memory

    options = {"render_video": not args.no_video, "progress": progress}
    if args.memory is None:
        return locate_video(cfg, model, device, args.video, query, args.output, name=str(args.video), **options)
    with open_memory(args.memory) as memory:
        name = str(args.video or memory.video.path)
        return locate_memory(cfg, model, device, memory, query, args.output, name=name, video=args.video, **options)


def run(args: argparse.Namespace) -> int:
    from prvql.infer.confidence import verdict_text
    from prvql.infer.trained_model import load_inference_model, resolve_device
    from prvql.paths import check_output_dir
    from prvql.progress import PhaseBars

    query = query_of(args)
    check_output_dir(args.output, "--output")
    check_source(args.video, args.memory)
    device = resolve_device(args.device)
    cfg, model = load_inference_model(args.config, args.weights, args.overrides)
    print(search_line(query), flush=True)
    with PhaseBars(enabled=not args.no_progress) as progress:
        found = search(args, cfg, model, device, query, progress)
    if len(found.result.track):
        first, last = found.result.track.extent
        sources, times = found.info.sources, found.info.times
        print(
            f"track: frames {first}-{last} (source {sources[first]}-{sources[last]}, "
            f"{times[first]:.2f}-{times[last]:.2f} s), "
            f"peak score {found.result.window.peak_score:.3f}"
        )
        if found.result.verdict is not None:  # source-video frame numbers, as the user knows them
            print(verdict_text(found.result.verdict, sources[first], sources[last]))
    print("wrote " + ", ".join(str(p) for p in found.written))
    return 0
