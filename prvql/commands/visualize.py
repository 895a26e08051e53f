"""Draw one query's predicted and ground-truth response tracks on its clip (an mp4), and its score curve.

The video shows the searched frames 0 .. query_frame - 1 and then the query frame, at the clip's rate: the
prediction in green, the ground truth in red, the visual crop in the top-left corner. When ``prvql predict``'s
per-query cache holds this query (``PREDICTIONS.cache/<key>.npz``, or --cache), the best box of every frame is
drawn in grey and the score curve goes to ``OUTPUT`` with the suffix ``.scores.png``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from prvql.errors import PRVQLError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", required=True, type=Path, help="Ego4D VQ2D annotation file")
    parser.add_argument("--predictions", required=True, type=Path, help="challenge predictions JSON")
    parser.add_argument("--clips", required=True, type=Path, help="folder of <clip_uid>.mp4")
    parser.add_argument("--query", required=True, help="query key: <annotation_uid>_<query_set>")
    parser.add_argument("--output", required=True, type=Path, help="mp4 to write")
    parser.add_argument("--cache", type=Path, help="per-query score folder (default: PREDICTIONS.cache)")
    parser.add_argument("--margin", type=int, help="only frames within this many of either track (default: all)")


def run(args: argparse.Namespace) -> int:
    import torch

    from prvql.atomic import atomic_outputs
    from prvql.boxes import rescale_boxes
    from prvql.config import Config, config_from_dict
    from prvql.data.annotations import load_annotations
    from prvql.data.video import VideoReader, write_video
    from prvql.errors import ConfigError
    from prvql.infer.postprocess import build_postprocessor
    from prvql.infer.predictions import load_predictions
    from prvql.infer.render import (
        CANDIDATE_COLOR,
        GROUND_TRUTH_COLOR,
        PREDICTION_COLOR,
        Overlay,
        crop_box,
        plot_scores,
        video_frame,
    )
    from prvql.infer.score_cache import ScoreCache
    from prvql.metrics.structures import ResponseTrack
    from prvql.paths import check_input_dir, check_output_file, file_in

    if args.margin is not None and args.margin < 0:
        raise PRVQLError(f"--margin: must be >= 0 (got {args.margin})")
    check_output_file(args.output, "--output")
    png = args.output.with_suffix(".scores.png")
    check_output_file(png, "--output (its .scores.png)")
    check_input_dir(args.clips, "--clips folder of <clip_uid>.mp4")
    annotations = load_annotations(args.annotations)
    records = {r.key: r for r in annotations.records()}
    if args.query not in records:
        raise PRVQLError(f"{args.annotations}: no query set with key {args.query!r} (keys: annotation_uid_queryset)")
    record = records[args.query]
    if not record.is_valid or record.clip_uid is None:
        raise PRVQLError(f"{args.annotations}: query set {args.query} is invalid or has no clip")
    predicted = load_predictions(args.predictions, annotations).get(record.key, ResponseTrack.empty())
    truth = ResponseTrack.from_pairs(record.response_track) if record.response_track else ResponseTrack.empty()
    cache = ScoreCache(args.cache or args.predictions.with_name(args.predictions.name + ".cache"))
    curve = cache.try_load(record.key) if record.key in cache else None
    recorded = cache.read_config()
    try:
        cfg = config_from_dict(recorded) if recorded is not None else Config()
    except ConfigError as exc:
        logging.getLogger(__name__).warning("%s: ignoring the recorded config (%s)", cache.root, exc)
        cfg = Config()

    reader = VideoReader(file_in(args.clips, record.clip_uid, ".mp4"))
    original, decoded = (record.frame_height, record.frame_width), (reader.height, reader.width)

    def to_clip(boxes) -> list[tuple[float, ...]]:
        """xyxy boxes [N, 4] in the annotation's pixels -> the same boxes in the decoded clip's pixels."""
        scaled = rescale_boxes(torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4), original, decoded)
        return [tuple(box) for box in scaled.tolist()]

    last = min(record.query_frame, reader.num_frames - 1)
    first = 0
    if args.margin is not None:
        spans = [t.extent for t in (predicted, truth) if len(t)] or [(last, last)]
        first = max(0, min(s for s, _ in spans) - args.margin)
        last = min(last, max(e for _, e in spans) + args.margin)
    crop = reader.read([record.visual_crop_frame])[0]
    inset = crop_box(crop, to_clip([record.visual_crop_box])[0])
    pred_boxes = dict(zip(predicted.frames.tolist(), to_clip(predicted.boxes), strict=True))
    true_boxes = dict(zip(truth.frames.tolist(), to_clip(truth.boxes), strict=True))
    candidates = to_clip(curve.boxes) if curve is not None else []

    def frames_out():
        for fno, frame in zip(range(first, last + 1), reader.iter_frames(first, last + 1), strict=False):
            overlays = []
            if curve is not None and fno < len(curve) and fno not in pred_boxes:
                overlays.append(Overlay(candidates[fno], CANDIDATE_COLOR, f"{curve.scores[fno]:.2f}", 1))
            if fno in true_boxes:
                overlays.append(Overlay(true_boxes[fno], GROUND_TRUTH_COLOR, "truth", 3))
            if fno in pred_boxes:
                overlays.append(Overlay(pred_boxes[fno], PREDICTION_COLOR, "prediction", 3))
            if fno == record.query_frame:
                overlays.append(Overlay((2.0, 2.0, reader.width - 2.0, reader.height - 2.0), "white", "query frame", 2))
            yield video_frame(frame, overlays, inset)

    with atomic_outputs() as stage:  # the video and the plot appear together or not at all
        count = write_video(stage(args.output), frames_out(), reader.fps or cfg.inference.fps)
        reader.close()
        if curve is not None and len(curve):
            window = build_postprocessor(cfg.inference).window(curve.scores, record.visual_crop_frame)
            plot_scores(
                stage(png),
                curve.scores,
                peak=window.peak,
                peak_threshold=window.peak_threshold,
                track_threshold=window.track_threshold,
                track=predicted.extent,
                ground_truth=truth.extent,
                title=f"{record.key} ({record.object_title})",
            )
    print(f"wrote {args.output}: frames {first}-{last} ({count}), prediction {predicted.extent}, truth {truth.extent}")
    if curve is not None and len(curve):
        print(f"wrote {png}")
    return 0
