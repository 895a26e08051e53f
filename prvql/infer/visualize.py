"""One query of a predictions file drawn on its clip: an mp4 of the predicted and true tracks, and the score plot.

The video shows the searched frames ``0 .. query_frame - 1`` and then the query frame, at the clip's rate, drawn by
:func:`prvql.infer.outputs.overlay_frames` (the renderer of ``track.mp4``): the prediction in green, the ground
truth in red, the visual crop in the top-left corner, the query frame outlined. When ``prvql predict``'s per-query
score cache holds the query, the best box of every other frame is drawn in grey and the score curve is plotted
(``<video>.scores.png``). Boxes are read in the annotation's pixels and drawn in the decoded clip's pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prvql.atomic import atomic_outputs
from prvql.boxes import rescale_boxes
from prvql.config import Config, config_from_dict
from prvql.data.annotations import load_annotations
from prvql.data.video import VideoReader, write_video
from prvql.errors import ConfigError, PRVQLError
from prvql.infer import outputs
from prvql.infer.postprocess import build_postprocessor
from prvql.infer.predictions import load_predictions
from prvql.infer.render import crop_box, plot_scores
from prvql.infer.score_cache import ScoreCache
from prvql.metrics.structures import ResponseTrack
from prvql.paths import check_input_dir, check_output_file, file_in

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Visualized:
    """What :func:`visualize_query` wrote.

    Attributes:
        video: the mp4.
        plot: the score plot, or None when the cache held no curve for the query.
        first_frame, last_frame: the clip frames drawn (inclusive).
        frames: frames written (fewer than ``last_frame - first_frame + 1`` if the clip ended early).
        predicted: inclusive (first, last) frames of the predicted track; ``(0, -1)`` when empty.
        ground_truth: the same for the annotated track.
    """

    video: Path
    plot: Path | None
    first_frame: int
    last_frame: int
    frames: int
    predicted: tuple[int, int]
    ground_truth: tuple[int, int]


def scores_plot_path(video: str | Path) -> Path:
    """Where the score plot of ``video`` goes: ``a1_1.mp4`` -> ``a1_1.scores.png``."""
    return Path(video).with_suffix(".scores.png")


def visualize_query(
    annotations: str | Path,
    predictions: str | Path,
    clips_dir: str | Path,
    key: str,
    output: str | Path,
    *,
    cache_dir: str | Path | None = None,
    margin: int | None = None,
) -> Visualized:
    """Draw query ``key``'s predicted and true tracks on its clip; the video and the plot appear together or not.

    Args:
        annotations: Ego4D VQ2D annotation file.
        predictions: challenge predictions JSON of the same queries.
        clips_dir: folder of ``<clip_uid>.mp4``.
        key: ``<annotation_uid>_<query_set>``.
        output: the mp4 to write (the plot goes next to it, :func:`scores_plot_path`).
        cache_dir: ``prvql predict``'s per-query score folder; ``None`` = ``<predictions>.cache``.
        margin: draw only the frames within this many of either track; ``None`` = frames ``0 .. query_frame``.

    Raises:
        PRVQLError: one line naming the file or the field (``"margin"``, ``"output"``, ``"clips_dir"``) at fault;
            nothing is written.
    """
    if margin is not None and margin < 0:
        raise PRVQLError(f"must be >= 0 (got {margin})", field="margin")
    output = check_output_file(output, "output")
    png = check_output_file(scores_plot_path(output), "output")
    check_input_dir(clips_dir, "folder of <clip_uid>.mp4", field="clips_dir")
    annotation_set = load_annotations(annotations)
    records = {r.key: r for r in annotation_set.records()}
    if key not in records:
        raise PRVQLError(f"{annotations}: no query set with key {key!r} (keys: annotation_uid_queryset)")
    record = records[key]
    if not record.is_valid or record.clip_uid is None:
        raise PRVQLError(f"{annotations}: query set {key} is invalid or has no clip")
    predicted = load_predictions(predictions, annotation_set).get(key, ResponseTrack.empty())
    truth = ResponseTrack.from_pairs(record.response_track) if record.response_track else ResponseTrack.empty()
    predictions = Path(predictions)
    cache = ScoreCache(cache_dir if cache_dir is not None else predictions.with_name(predictions.name + ".cache"))
    curve = cache.try_load(key) if key in cache else None
    cfg = _recorded_config(cache)

    with VideoReader(file_in(clips_dir, record.clip_uid, ".mp4")) as reader:
        original, decoded = (record.frame_height, record.frame_width), (reader.height, reader.width)

        def to_clip(track: ResponseTrack) -> ResponseTrack:
            """``track`` with its boxes in the decoded clip's pixels."""
            return ResponseTrack(track.frames, _rescaled(track.boxes, original, decoded), track.score)

        first, last = _drawn_frames(record.query_frame, reader.num_frames, (predicted, truth), margin)
        crop = reader.read([record.visual_crop_frame])[0]
        inset = crop_box(crop, _rescaled(np.asarray([record.visual_crop_box]), original, decoded)[0])
        drawn = outputs.overlay_frames(
            reader.iter_frames(first, last + 1),
            inset,
            to_clip(predicted),
            scores=None if curve is None else curve.scores,
            boxes=None if curve is None else _rescaled(curve.boxes, original, decoded),
            ground_truth=to_clip(truth),
            first_frame=first,
            outlined_frame=record.query_frame,
        )
        plotted = curve is not None and len(curve) > 0
        with atomic_outputs() as stage:
            count = write_video(stage(output), drawn, reader.fps or cfg.inference.fps)
            if plotted:
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
    return Visualized(output, png if plotted else None, first, last, count, predicted.extent, truth.extent)


def _recorded_config(cache: ScoreCache) -> Config:
    """The config ``prvql predict`` recorded in the cache (its post-processing and rate); the defaults without one."""
    recorded = cache.read_config()
    try:
        return config_from_dict(recorded) if recorded is not None else Config()
    except ConfigError as exc:
        logger.warning("%s: ignoring the recorded config (%s)", cache.root, exc)
        return Config()


def _rescaled(boxes: np.ndarray, original: tuple[int, int], decoded: tuple[int, int]) -> np.ndarray:
    """float64 [N, 4] xyxy boxes in ``original`` (height, width) pixels -> the same boxes in ``decoded`` pixels."""
    scaled = rescale_boxes(torch.tensor(np.asarray(boxes), dtype=torch.float64).reshape(-1, 4), original, decoded)
    return scaled.numpy()


def _drawn_frames(
    query_frame: int, num_frames: int, tracks: tuple[ResponseTrack, ...], margin: int | None
) -> tuple[int, int]:
    """Inclusive (first, last) clip frames to draw: ``0 .. query_frame`` (within the clip), narrowed to ``margin``
    frames around the non-empty ``tracks`` (around the last frame when all are empty)."""
    last = min(query_frame, num_frames - 1)
    if margin is None:
        return 0, last
    spans = [t.extent for t in tracks if len(t)] or [(last, last)]
    first = max(0, min(s for s, _ in spans) - margin)
    return first, min(last, max(e for _, e in spans) + margin)
