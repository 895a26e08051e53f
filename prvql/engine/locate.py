"""Find the last occurrence of a visual query in a stream of frames, and write what was found.

:func:`locate` searches frames at the model's rate for one query (an image, or a box on a frame) with a
:class:`~prvql.engine.inference.Predictor` and turns the per-frame scores into a response track with a
:class:`~prvql.engine.postprocess.PostProcessor`. :func:`write_locate_outputs` writes the result as ``prvql locate``
and ``prvql demo`` present it:

- ``track.json``: the caller's fields, then ``source_fps, model_fps, width, height, searched_frames``,
  ``track {score, start, end, peak, peak_score, peak_threshold, track_threshold, first_frame, frames}`` and
  ``curve``; each frame entry is ``{frame (model-rate index), source_frame, time (s), box (xyxy pixels), score}``;
  ``first_frame`` > 0 when ``inference.after_visual_crop`` ruled out the frames before it;
- ``scores.png``: the score curve, the chosen peak, both thresholds, the track span (and the ground truth's), the
  ruled-out frames shaded;
- ``track.mp4``: the searched frames with the track (green, with its score), the best box of the other frames
  (grey), the ground truth when known (red), the query crop in the corner and, if asked, the query frame last.

Boxes are xyxy pixels of the searched frames everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prvql.atomic import atomic_outputs, atomic_write_json
from prvql.boxes import clip_boxes
from prvql.data.transforms import prepare_query
from prvql.data.video import write_video
from prvql.engine.inference import ClipQuery, Predictor
from prvql.engine.postprocess import PostProcessor, TrackWindow
from prvql.engine.render import (
    CANDIDATE_COLOR,
    GROUND_TRUTH_COLOR,
    PREDICTION_COLOR,
    Overlay,
    crop_box,
    draw_overlays,
    even_size,
    plot_scores,
    video_frame,
)
from prvql.errors import PRVQLError
from prvql.metrics.structures import ResponseTrack


@dataclass(frozen=True, eq=False)
class LocateResult:
    """What :func:`locate` found.

    Attributes:
        scores: float32 [N] occurrence score of each searched frame ``0 .. N-1``.
        boxes: float32 [N, 4] the best box of each frame, xyxy pixels of the searched frames.
        track: the response track (frames ``window.start .. window.end`` with their boxes).
        window: where the track is and why (peak, thresholds, smoothed curve).
        frame_size: (height, width) of the searched frames.
        query_image: uint8 [h, w, 3] the image the query was cut from.
        query_box: (x1, y1, x2, y2) the query's box in ``query_image`` pixels, clipped to it.
    """

    scores: np.ndarray
    boxes: np.ndarray
    track: ResponseTrack
    window: TrackWindow
    frame_size: tuple[int, int]
    query_image: np.ndarray
    query_box: tuple[float, float, float, float]

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def crop(self) -> np.ndarray:
        """uint8 [h', w', 3] the query's pixels (``query_box`` of ``query_image``)."""
        return crop_box(self.query_image, self.query_box)


def locate(
    predictor: Predictor,
    postprocessor: PostProcessor,
    frames: Iterable[np.ndarray],
    query_image: np.ndarray,
    query_box: Sequence[float] | None = None,
    *,
    num_frames: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    visual_crop_frame: int | None = None,
) -> LocateResult:
    """Search ``frames`` for the query and pick the response track.

    Args:
        predictor: scores every frame (its ``input_size`` sizes the query crop).
        postprocessor: turns the score curve into the track.
        frames: the frames to search, in order, each uint8 [H, W, 3] at the model's frame rate; read lazily.
        query_image: uint8 [h, w, 3] the picture holding the query.
        query_box: (x1, y1, x2, y2) of the object in ``query_image`` pixels; ``None`` = the whole image.
        num_frames: how many of ``frames`` to search; ``None`` = ``len(frames)``.
        progress: called as ``progress(read, num_frames)`` once before the search (``read`` = 0) and each time the
            predictor takes a frame (it scores them in chunks of ``windows_per_batch`` windows, so ``read`` runs at
            most one chunk ahead of the frames scored). An exception it raises (e.g. to cancel) ends the search.
        visual_crop_frame: the index in ``frames`` of the frame ``query_image`` is, when the query was cut from a
            searched frame under the Ego4D protocol (``prvql demo``); used only by ``inference.after_visual_crop``.

    Returns:
        The per-frame scores and boxes and the track. If ``frames`` ends early, the frames there were are searched.

    Raises:
        PRVQLError: a box outside the query image, or nothing to search.
    """
    height, width = query_image.shape[:2]
    if query_box is None:
        query_box = (0.0, 0.0, float(width), float(height))
    box = clip_boxes(torch.tensor(query_box, dtype=torch.float64), height, width)
    if not (box[2] > box[0] and box[3] > box[1]):
        raise PRVQLError(f"query box {tuple(query_box)} lies outside the {width}x{height} query image")
    if num_frames is None:
        if not hasattr(frames, "__len__"):
            raise TypeError("locate: give num_frames when frames is a stream")
        num_frames = len(frames)
    if num_frames <= 0:
        raise PRVQLError("locate: no frames to search")

    size: list[tuple[int, int]] = []

    def watched(stream: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for read, frame in enumerate(stream, 1):
            if not size:
                size.append((int(frame.shape[0]), int(frame.shape[1])))
            if progress is not None:
                progress(read, num_frames)
            yield frame

    query = ClipQuery(
        "query", prepare_query(query_image, box, predictor.input_size, predictor.released_preprocessing), num_frames
    )
    if progress is not None:
        progress(0, num_frames)
    result = predictor.predict(watched(frames), query)
    if len(result) == 0:
        raise PRVQLError("locate: the frames ended before any could be searched")
    track, window = postprocessor(result.scores, result.boxes, visual_crop_frame)
    return LocateResult(
        scores=result.scores,
        boxes=result.boxes,
        track=track,
        window=window,
        frame_size=size[0],
        query_image=query_image,
        query_box=tuple(float(v) for v in box),
    )


def _frame_entry(result: LocateResult, k: int, source_frames: Sequence[int], source_fps: float) -> dict:
    return {
        "frame": k,
        "source_frame": int(source_frames[k]),
        "time": round(source_frames[k] / source_fps, 4),
        "box": [round(float(v), 2) for v in result.boxes[k]],
        "score": round(float(result.scores[k]), 5),
    }


def locate_report(
    result: LocateResult,
    fps: float,
    *,
    source_frames: Sequence[int] | None = None,
    source_fps: float | None = None,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``track.json`` (see the module docstring).

    Args:
        result: what :func:`locate` found.
        fps: the model's frame rate (of the searched frames).
        source_frames: searched frame k -> frame index in the source video; ``None`` = k (the frames are the source).
        source_fps: the source video's rate; ``None`` = ``fps``.
        info: fields to put first (e.g. the video's name and the query).
    """
    n = len(result)
    source_frames = list(range(n)) if source_frames is None else source_frames
    source_fps = fps if source_fps is None else source_fps
    window = result.window
    return {
        **(info or {}),
        "source_fps": source_fps,
        "model_fps": fps,
        "width": result.frame_size[1],
        "height": result.frame_size[0],
        "searched_frames": n,
        "track": {
            "score": result.track.score,
            "start": window.start,
            "end": window.end,
            "peak": window.peak,
            "peak_score": window.peak_score,
            "peak_threshold": window.peak_threshold,
            "track_threshold": window.track_threshold,
            "first_frame": window.first_frame,
            "frames": [_frame_entry(result, k, source_frames, source_fps) for k in range(window.start, window.end + 1)],
        },
        "curve": [_frame_entry(result, k, source_frames, source_fps) for k in range(n)],
    }


def _video_frames(
    result: LocateResult,
    frames: Iterable[np.ndarray],
    ground_truth: ResponseTrack | None,
    show_query_frame: bool,
) -> Iterator[np.ndarray]:
    """The frames of ``track.mp4``, uint8 [H', W', 3] with even sides."""
    window = result.window
    truth = {} if ground_truth is None else dict(zip(ground_truth.frames.tolist(), ground_truth.boxes, strict=True))
    crop = result.crop
    for k, frame in enumerate(frames):
        if k >= len(result):
            break
        overlays = []
        if k in truth:
            overlays.append(Overlay(tuple(float(v) for v in truth[k]), GROUND_TRUTH_COLOR, "truth", 2))
        box = tuple(float(v) for v in result.boxes[k])
        if window.start <= k <= window.end:
            overlays.append(Overlay(box, PREDICTION_COLOR, f"track {result.scores[k]:.2f}", 3))
        else:
            overlays.append(Overlay(box, CANDIDATE_COLOR, f"{result.scores[k]:.2f}", 1))
        yield video_frame(frame, overlays, crop)
    if show_query_frame:
        yield even_size(draw_overlays(result.query_image, [Overlay(result.query_box, GROUND_TRUTH_COLOR, "query", 3)]))


def write_locate_outputs(
    result: LocateResult,
    frames: Iterable[np.ndarray] | None,
    out_dir: str | Path,
    fps: float,
    *,
    source_frames: Sequence[int] | None = None,
    source_fps: float | None = None,
    info: Mapping[str, Any] | None = None,
    ground_truth: ResponseTrack | None = None,
    show_query_frame: bool = False,
    title: str = "",
    stage: Callable[[Path], Path] | None = None,
) -> list[Path]:
    """Write ``track.json``, ``scores.png`` and (unless ``frames`` is None) ``track.mp4``, all or none of them.

    Args:
        result: what :func:`locate` found.
        frames: the searched frames again, uint8 [H, W, 3] each, for ``track.mp4`` (only the first ``len(result)``
            are read); ``None`` = no video.
        out_dir: output folder (created).
        fps: the model's frame rate: ``track.mp4`` plays at it.
        source_frames: see :func:`locate_report`.
        source_fps: see :func:`locate_report`.
        info: see :func:`locate_report`.
        ground_truth: the annotated track (frames index the searched frames), drawn red and shaded on the plot.
        show_query_frame: end ``track.mp4`` with the query image and its box (for a box on a frame of the video;
            it must have the searched frames' size).
        title: prefix of the plot's title.
        stage: ``stage(path) -> temporary path`` of an :func:`prvql.atomic.atomic_outputs` block the caller holds
            (to publish more files with these); ``None`` = publish these three together when done.

    Returns:
        The paths written (published when the ``stage`` block ends).
    """
    if stage is None:
        with atomic_outputs() as own_stage:
            return write_locate_outputs(
                result,
                frames,
                out_dir,
                fps,
                source_frames=source_frames,
                source_fps=source_fps,
                info=info,
                ground_truth=ground_truth,
                show_query_frame=show_query_frame,
                title=title,
                stage=own_stage,
            )
    out = Path(out_dir)
    window = result.window
    scores = np.asarray(result.scores, dtype=np.float64)
    plot_scores(
        stage(out / "scores.png"),
        result.scores,
        peak=window.peak,
        peak_threshold=window.peak_threshold,
        track_threshold=window.track_threshold,
        track=(window.start, window.end),
        ground_truth=ground_truth.extent if ground_truth is not None else None,
        smoothed=None if np.array_equal(window.smoothed, scores) else window.smoothed,
        fps=fps,
        title=f"{title}{': ' if title else ''}track {window.start}-{window.end} (peak {window.peak})",
        ruled_out_before=window.first_frame,
    )
    written = [out / "scores.png"]
    if frames is not None:
        write_video(stage(out / "track.mp4"), _video_frames(result, frames, ground_truth, show_query_frame), fps)
        written.append(out / "track.mp4")
    atomic_write_json(  # staged last: published last, so track.json marks a complete set
        stage(out / "track.json"),
        locate_report(result, fps, source_frames=source_frames, source_fps=source_fps, info=info),
        indent=1,
    )
    return [out / "track.json", *written]
