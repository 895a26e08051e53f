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

from prvql.commands.options import add_device_option, add_model_options, add_override_option
from prvql.errors import ConfigError, PRVQLError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", required=True, type=Path, help="video file to search")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--query", type=Path, help="image of the object (the whole image is the query crop)")
    query.add_argument("--query-frame", type=int, help="source-video frame index holding the query box")
    parser.add_argument("--query-box", help="x,y,w,h of the object on --query-frame, in pixels of the video")
    add_model_options(parser)
    parser.add_argument("--output", required=True, type=Path, help="output folder")
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
    import torch

    from prvql.boxes import clip_boxes
    from prvql.data.images import read_image
    from prvql.data.video import VideoReader, resample_indices
    from prvql.engine.inference import build_predictor
    from prvql.engine.locate import locate, write_locate_outputs
    from prvql.engine.postprocess import build_postprocessor
    from prvql.engine.trained_model import load_inference_model, resolve_device
    from prvql.paths import check_output_dir

    if (args.query_frame is None) != (args.query_box is None):
        raise PRVQLError("--query-frame and --query-box go together (or give --query IMAGE instead)")
    box = parse_box(args.query_box) if args.query_box is not None else None
    check_output_dir(args.output, "--output")
    query_image = read_image(args.query, "query image") if args.query is not None else None
    with VideoReader(args.video) as reader:
        if reader.fps <= 0:
            raise PRVQLError(f"{args.video}: the video does not state a frame rate")
        crop_frame, crop_box = query_image, None
        if args.query_frame is not None:
            if not 0 <= args.query_frame < reader.num_frames:
                raise PRVQLError(
                    f"--query-frame: must be in [0, {reader.num_frames}) for {args.video} (got {args.query_frame})"
                )
            clipped = clip_boxes(torch.tensor(box), reader.height, reader.width)
            if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
                raise PRVQLError(f"--query-box: {args.query_box} lies outside the {reader.width}x{reader.height} frame")
            crop_box = tuple(float(v) for v in clipped)
            crop_frame = reader.read([args.query_frame])[0]
        device = resolve_device(args.device)
        cfg, model = load_inference_model(args.config, args.weights, args.overrides)
        fps = cfg.inference.fps
        if fps <= 0:
            raise ConfigError(f"inference.fps: must be > 0 (got {fps})")
        sources = resample_indices(reader.num_frames, reader.fps, fps)  # model frame k -> source frame sources[k]

        if args.query is not None:
            searched = len(sources)
            query_info = {"image": str(args.query)}
        else:
            searched = sum(1 for s in sources if s < args.query_frame)
            if searched == 0:
                raise PRVQLError(
                    f"--query-frame: no frame at {fps:g} fps comes before frame {args.query_frame} to search"
                )
            query_info = {"frame": args.query_frame, "time": args.query_frame / reader.fps, "box": list(crop_box)}

        result = locate(
            build_predictor(cfg, model, device),
            build_postprocessor(cfg.inference),
            (frame for _, frame in reader.iter_resampled(fps)),
            crop_frame,
            crop_box,
            num_frames=searched,
        )
        written = write_locate_outputs(
            result,
            None if args.no_video else (frame for _, frame in reader.iter_resampled(fps)),
            args.output,
            fps,
            source_frames=sources,
            source_fps=reader.fps,
            info={"video": str(args.video), "query": query_info},
            show_query_frame=args.query_frame is not None,
            title=args.video.name,
        )
    if len(result.track):
        first, last = result.track.extent
        print(
            f"track: frames {first}-{last} (source {sources[first]}-{sources[last]}, "
            f"{sources[first] / reader.fps:.2f}-{sources[last] / reader.fps:.2f} s), "
            f"peak score {result.window.peak_score:.3f}"
        )
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
