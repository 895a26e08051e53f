"""The demo: find an object's last sighting in a fresh synthetic episode of held-out imagery, score it, draw it.

:func:`run_demo` renders episode ``seed`` from photographs training never sees
(:func:`prvql.synth.episode.make_episode` with ``pool="heldout"``), searches the frames before its query frame for
the visual crop (:func:`prvql.infer.locate.locate`), scores the response track with the official VQ2D metrics of
this one query and writes, all together or none:

- ``track.json``, ``scores.png``, ``track.mp4``: as ``prvql locate`` writes them
  (:func:`prvql.infer.outputs.write_locate_outputs`), the ground truth drawn red, plus the episode's description;
- ``query.png``: the visual crop; ``episode.mp4``: the whole rendered clip;
- ``metrics.json``: the metrics, the ground truth, the timings.

Boxes are xyxy pixels of the episode's frames; frame numbers index them (the searched frames are ``0 ..
query_frame - 1``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from prvql.atomic import atomic_outputs, atomic_write_json
from prvql.config import Config
from prvql.data.video import write_video
from prvql.errors import PRVQLError
from prvql.infer.locate import LocateResult, Progress, locate
from prvql.infer.outputs import write_locate_outputs
from prvql.infer.postprocess import build_postprocessor
from prvql.infer.predictor import build_predictor
from prvql.infer.trained_model import load_inference_model, resolve_device
from prvql.metrics.overlap import frame_ious
from prvql.metrics.structures import ResponseTrack
from prvql.metrics.vq2d import VQ2DMetrics, query_overlaps, summarize
from prvql.paths import check_output_dir
from prvql.synth.episode import Episode, SynthOptions, make_episode


@dataclass(frozen=True)
class TrackFrame:
    """One frame of the response track.

    Attributes:
        frame: frame index in the episode.
        seconds: its time in the episode.
        box: (x1, y1, x2, y2) pixels, the predicted box.
        score: the frame's occurrence score.
        iou: IoU of ``box`` with the true box of that frame; None where the ground truth has no box.
    """

    frame: int
    seconds: float
    box: tuple[float, float, float, float]
    score: float
    iou: float | None


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` found and wrote (what ``prvql demo`` prints).

    Attributes:
        seed: the episode's seed.
        num_frames: frames in the episode.
        fps: its frame rate.
        frame_size: (height, width) of its frames.
        object_title: the query object's name.
        visual_crop_frame: the frame the visual crop was cut from.
        query_frame: the frame the query is asked at; frames ``0 .. query_frame - 1`` were searched.
        ruled_out_before: frames before this one could not be the answer (``inference.after_visual_crop``); 0 = none.
        ground_truth: inclusive (first, last) frames of the annotated track.
        track: inclusive (start, end) frames of the response track.
        peak, peak_score: the frame the track grew from, and its score.
        frames: the response track's frames, in order.
        metrics: the VQ2D metrics of this one query.
        tiou, stiou: temporal and spatio-temporal IoU of the track with the ground truth.
        recovered_frames: ground-truth frames whose box the track recovered (IoU >= 0.5).
        written: the files written, in ``output``.
        device: where the model ran.
        seconds: wall time of ``load_model``, ``render_episode``, ``search``, ``write_outputs`` and ``total``.
    """

    seed: int
    num_frames: int
    fps: float
    frame_size: tuple[int, int]
    object_title: str
    visual_crop_frame: int
    query_frame: int
    ruled_out_before: int
    ground_truth: tuple[int, int]
    track: tuple[int, int]
    peak: int
    peak_score: float
    frames: list[TrackFrame]
    metrics: VQ2DMetrics
    tiou: float
    stiou: float
    recovered_frames: int
    written: list[Path]
    device: str
    seconds: dict[str, float]


def run_demo(
    output: str | Path,
    *,
    seed: int = 0,
    num_frames: int | None = None,
    config: str | Path | Config | None = None,
    weights: str | Path | None = None,
    device: str | None = None,
    videos: bool = True,
    progress: Progress | None = None,
) -> DemoResult:
    """Render held-out episode ``seed``, search it, score the track and write the outputs into ``output``.

    Args:
        output: the output folder (created; files already there with other names are kept).
        seed: the episode's seed, in [0, 2**32).
        num_frames: 5 fps frames in the episode; ``None`` = :class:`~prvql.synth.episode.SynthOptions`' default.
        config, weights: the model (:func:`prvql.infer.trained_model.load_inference_model`); both ``None`` = the
            shipped demo model.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...; ``None`` = CUDA when available.
        videos: write ``track.mp4`` and ``episode.mp4``.
        progress: called with ("episode", frames rendered, frames in the episode), then ("search", frames taken by
            the search, frames to search) (:class:`prvql.progress.PhaseBars` shows them).

    Raises:
        PRVQLError: one line naming the file or the field at fault (``"output"``, ``"frames"``, ``"device"``,
            ``"weights"``); nothing is written.
    """
    out = check_output_dir(output, "output")
    start = time.perf_counter()
    torch_device = resolve_device(device)
    cfg, model = load_inference_model(config, weights)
    loaded = time.perf_counter()
    opts = SynthOptions() if num_frames is None else SynthOptions(num_frames=num_frames)
    try:
        episode = make_episode(
            seed, opts, pool="heldout", progress=None if progress is None else lambda d, t: progress("episode", d, t)
        )
    except RuntimeError as exc:
        raise PRVQLError(str(exc), field="frames") from None
    rendered = time.perf_counter()

    searched = episode.frames[: episode.query_frame]
    result = locate(
        build_predictor(cfg, model, torch_device),
        build_postprocessor(cfg.inference),
        searched,
        episode.frames[episode.visual_crop_frame],
        episode.visual_crop_box,
        visual_crop_frame=episode.visual_crop_frame,
        progress=None if progress is None else lambda done, total: progress("search", done, total),
    )
    truth = ResponseTrack.from_pairs(episode.response_track)
    overlaps = query_overlaps([result.track], [truth])
    metrics = summarize(overlaps)
    located = time.perf_counter()

    info = _episode_info(seed, episode)
    seconds = {"load_model": loaded - start, "render_episode": rendered - loaded, "search": located - rendered}
    window = result.window
    with atomic_outputs() as stage:  # every output appears together, or none does
        written = write_locate_outputs(
            result,
            searched if videos else None,
            out,
            episode.fps,
            info={"episode": info, "query": info["visual_crop"]},
            ground_truth=truth,
            title=f"seed {seed}, {episode.object_title}",
            stage=stage,
        )
        Image.fromarray(episode.query).save(stage(out / "query.png"))
        written.append(out / "query.png")
        if videos:
            write_video(stage(out / "episode.mp4"), episode.frames, episode.fps)
            written.append(out / "episode.mp4")
        wrote = time.perf_counter()
        seconds.update(write_outputs=wrote - located, total=wrote - start)
        report = {
            "episode": info,
            "prediction": {"start": window.start, "end": window.end},
            "metrics": metrics.to_dict(),
            "tiou": float(overlaps.tiou[0]),
            "stiou": float(overlaps.stiou[0]),
            "recovered_frames": int(overlaps.recovered[0]),
            "device": str(torch_device),
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
        }
        atomic_write_json(stage(out / "metrics.json"), report, indent=1)
        written.append(out / "metrics.json")

    return DemoResult(
        seed=seed,
        num_frames=int(episode.frames.shape[0]),
        fps=episode.fps,
        frame_size=(int(episode.frames.shape[1]), int(episode.frames.shape[2])),
        object_title=episode.object_title,
        visual_crop_frame=episode.visual_crop_frame,
        query_frame=episode.query_frame,
        ruled_out_before=window.first_frame,
        ground_truth=truth.extent,
        track=(window.start, window.end),
        peak=window.peak,
        peak_score=window.peak_score,
        frames=_track_frames(result, truth, episode.fps),
        metrics=metrics,
        tiou=report["tiou"],
        stiou=report["stiou"],
        recovered_frames=report["recovered_frames"],
        written=written,
        device=str(torch_device),
        seconds=seconds,
    )


def _episode_info(seed: int, episode: Episode) -> dict[str, Any]:
    """The episode's description in ``track.json`` and ``metrics.json``."""
    return {
        "seed": seed,
        "imagery": "heldout",
        "frames": int(episode.frames.shape[0]),
        "fps": episode.fps,
        "object_title": episode.object_title,
        "query_frame": episode.query_frame,
        "visual_crop": {"frame": episode.visual_crop_frame, "box": list(episode.visual_crop_box)},
        "ground_truth": [{"frame": f, "box": list(b)} for f, b in episode.response_track],
    }


def _track_frames(result: LocateResult, truth: ResponseTrack, fps: float) -> list[TrackFrame]:
    """The response track's frames with their scores and their IoU with the truth."""
    ious = frame_ious(truth, result.track)  # IoU is symmetric: per predicted frame, with the true box there
    truth_frames = set(truth.frames.tolist())
    return [
        TrackFrame(
            frame=frame,
            seconds=frame / fps,
            box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            score=float(result.scores[frame]),
            iou=float(iou) if frame in truth_frames else None,
        )
        for frame, box, iou in zip(result.track.frames.tolist(), result.track.boxes, ious, strict=True)
    ]
