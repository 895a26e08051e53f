"""What a search writes, as ``prvql locate``, ``prvql demo`` and the app present it.

- ``track.json``: the caller's fields, then ``source_fps, model_fps, width, height, searched_frames``,
  ``track {score, start, end, peak, peak_score, peak_threshold, track_threshold, first_frame, frames}`` and
  ``curve``; each frame entry is ``{frame (model-rate index), source_frame, time (s), box (xyxy pixels), score}``;
  ``first_frame`` > 0 when ``inference.after_visual_crop`` ruled out the frames before it;
- ``track.json`` also holds ``verdict`` (``"found"`` / ``"not_found"``), ``confidence`` and
  ``confidence_signals`` when the search was judged (:mod:`prvql.infer.confidence`), and ``geometric``
  ``{verified, inliers, crop_source_frame, colour_distance}`` when geometric verification ran
  (``crop_source_frame``: the searched frame the query crop was cut from, set aside as no answer, null when none;
  ``colour_distance``: chroma histogram distance in [0, 1] of the track's box to the crop);
- ``scores.png``: the score curve, the chosen peak, both thresholds, the track span (and the ground truth's), the
  ruled-out frames shaded; the verdict in words under the title when judged;
- ``track.mp4``: the searched frames with the track (green, with its score), the best box of the other frames
  (grey), the ground truth when known (red), the query crop in the corner and, if asked, the query frame last.

:func:`overlay_frames` draws those frames; ``prvql visualize`` (:mod:`prvql.infer.visualize`) draws with it too.
Boxes are xyxy pixels of the searched frames everywhere.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from prvql.atomic import atomic_outputs, atomic_write_json
from prvql.data.video import write_video
from prvql.infer.confidence import verdict_text
from prvql.infer.render import (
    CANDIDATE_COLOR,
    GROUND_TRUTH_COLOR,
    PREDICTION_COLOR,
    Overlay,
    draw_overlays,
    even_size,
    plot_scores,
    video_frame,
)
from prvql.metrics.structures import ResponseTrack

if TYPE_CHECKING:  # locate.py imports this module
    from prvql.infer.locate import LocateResult


def _frame_entry(
    result: LocateResult, k: int, source_frames: Sequence[int], source_fps: float, times: Sequence[float] | None
) -> dict:
    source = int(source_frames[k])
    return {
        "frame": k,
        "source_frame": source,
        "time": round(float(times[k]) if times is not None else source / source_fps, 4),
        "box": [round(float(v), 2) for v in result.boxes[k]],
        "score": round(float(result.scores[k]), 5),
    }


def locate_report(
    result: LocateResult,
    fps: float,
    *,
    source_frames: Sequence[int] | None = None,
    source_fps: float | None = None,
    times: Sequence[float] | None = None,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``track.json`` (see the module docstring).

    Args:
        result: what :func:`locate` found.
        fps: the model's frame rate (of the searched frames).
        source_frames: searched frame k -> frame index in the source video; ``None`` = k (the frames are the source).
        source_fps: the source video's rate; ``None`` = ``fps``.
        times: the time in seconds of each searched frame in the source video (a variable-rate video's frame
            times); ``None`` = ``source_frame / source_fps``.
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
        **_verdict_fields(result),
        "track": {
            "score": result.track.score,
            "start": window.start,
            "end": window.end,
            "peak": window.peak,
            "peak_score": window.peak_score,
            "peak_threshold": window.peak_threshold,
            "track_threshold": window.track_threshold,
            "first_frame": window.first_frame,
            "frames": [
                _frame_entry(result, k, source_frames, source_fps, times) for k in range(window.start, window.end + 1)
            ],
        },
        "curve": [_frame_entry(result, k, source_frames, source_fps, times) for k in range(n)],
    }


def _verdict_fields(result: LocateResult) -> dict[str, Any]:
    """``verdict``, ``confidence`` and their signals, and the geometric verification's findings, when known."""
    fields: dict[str, Any] = {}
    if result.verdict is not None:
        fields |= {
            "verdict": result.verdict.word,
            "confidence": result.verdict.confidence,
            "confidence_signals": result.verdict.signals,
        }
    if result.geometric is not None:
        geo = result.geometric
        fields["geometric"] = {
            "verified": geo.verified,
            "inliers": geo.best_inliers,
            "crop_source_frame": geo.crop_source_frame,
            "colour_distance": geo.colour_distance,
        }
    return fields


def overlay_frames(
    frames: Iterable[np.ndarray],
    inset: np.ndarray,
    track: ResponseTrack,
    *,
    scores: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    ground_truth: ResponseTrack | None = None,
    first_frame: int = 0,
    num_frames: int | None = None,
    outlined_frame: int | None = None,
    query: tuple[np.ndarray, Sequence[float]] | None = None,
) -> Iterator[np.ndarray]:
    """The frames of a result video (``track.mp4``, ``prvql visualize``), uint8 [H', W', 3] with even sides.

    Frame ``k`` of ``frames`` is frame ``first_frame + k`` of the numbering ``track``, ``scores``, ``boxes`` and
    ``ground_truth`` use. On it are drawn, in order: the true box (red, "truth"); the track's box (green,
    "track 0.87" with the frame's score when ``scores`` has one) or, on a frame off the track, the frame's best box
    (grey, its score); a white outline around the whole frame "query frame" on ``outlined_frame``; the query crop
    ``inset`` in the top-left corner (:func:`~prvql.infer.render.video_frame`).

    Args:
        frames: uint8 [H, W, 3] each, read lazily.
        inset: uint8 [h, w, 3] the query crop.
        track: the predicted response track, xyxy pixels of ``frames``.
        scores: [N] per-frame scores (labels), or None.
        boxes: [N, 4] xyxy best box of each frame (drawn grey off the track), or None: none drawn.
        ground_truth: the annotated track, xyxy pixels of ``frames``, or None.
        first_frame: the frame number of ``frames``' first frame.
        num_frames: read at most this many of ``frames``; ``None`` = all.
        outlined_frame: the frame number to outline as the query frame, or None.
        query: (uint8 [h, w, 3] image, its xyxy box) to end the video with, the box drawn red "query"; or None.
    """
    tracked = dict(zip(track.frames.tolist(), track.boxes, strict=True))
    truth = {} if ground_truth is None else dict(zip(ground_truth.frames.tolist(), ground_truth.boxes, strict=True))
    for k, frame in enumerate(itertools.islice(frames, num_frames)):
        fno = first_frame + k
        score = float(scores[fno]) if scores is not None and 0 <= fno < len(scores) else None
        overlays = []
        if fno in truth:
            overlays.append(Overlay(_box(truth[fno]), GROUND_TRUTH_COLOR, "truth", 2))
        if fno in tracked:
            label = "track" if score is None else f"track {score:.2f}"
            overlays.append(Overlay(_box(tracked[fno]), PREDICTION_COLOR, label, 3))
        elif boxes is not None and 0 <= fno < len(boxes):
            overlays.append(Overlay(_box(boxes[fno]), CANDIDATE_COLOR, None if score is None else f"{score:.2f}", 1))
        if fno == outlined_frame:
            height, width = frame.shape[:2]
            overlays.append(Overlay((2.0, 2.0, width - 2.0, height - 2.0), "white", "query frame", 2))
        yield video_frame(frame, overlays, inset)
    if query is not None:
        image, box = query
        yield even_size(draw_overlays(image, [Overlay(_box(box), GROUND_TRUTH_COLOR, "query", 3)]))


def _box(values: Sequence[float] | np.ndarray) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2


def write_locate_outputs(
    result: LocateResult,
    frames: Iterable[np.ndarray] | None,
    out_dir: str | Path,
    fps: float,
    *,
    source_frames: Sequence[int] | None = None,
    source_fps: float | None = None,
    times: Sequence[float] | None = None,
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
        times: see :func:`locate_report`.
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
                times=times,
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
        title=f"{title}{': ' if title else ''}track {window.start}-{window.end} (peak {window.peak})"
        + ("" if result.verdict is None else "\n" + verdict_text(result.verdict, window.start, window.end)),
        ruled_out_before=window.first_frame,
    )
    written = [out / "scores.png"]
    if frames is not None:
        drawn = overlay_frames(
            frames,
            result.crop,
            result.track,
            scores=result.scores,
            boxes=result.boxes,
            ground_truth=ground_truth,
            num_frames=len(result),
            query=(result.query_image, result.query_box) if show_query_frame else None,
        )
        write_video(stage(out / "track.mp4"), drawn, fps)
        written.append(out / "track.mp4")
    atomic_write_json(  # staged last: published last, so track.json marks a complete set
        stage(out / "track.json"),
        locate_report(result, fps, source_frames=source_frames, source_fps=source_fps, times=times, info=info),
        indent=1,
    )
    return [out / "track.json", *written]
