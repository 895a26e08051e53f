"""5 fps clip extraction from the canonical Ego4D videos, and validation of the written clips.

Clip frame ``j`` is canonical frame ``video_start_frame + j * step`` with ``step = video fps / clip_fps``
(30 / 5 = 6 for Ego4D), for every such frame up to ``video_end_frame`` inclusive: the frame numbering of the
official ``convert_videos_to_clips.py``, so annotation frame numbers index the written clips directly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from prvql.data.annotations import CANONICAL_FPS, AnnotationSet, ClipEntry, load_annotations
from prvql.data.video import VideoReader, write_video
from prvql.errors import AnnotationError, PRVQLError, VideoError
from prvql.paths import check_input_dir, check_output_dir, file_in
from prvql.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractJob:
    """Everything needed to cut one clip out of its canonical video and to check the result."""

    clip_uid: str
    video_uid: str
    video_start_frame: int
    video_end_frame: int
    clip_fps: float
    max_annotated_frame: int  # largest annotated clip frame (visual crop, query frame, tracks); -1 if none

    @property
    def num_frames(self) -> int:
        """Number of clip frames, assuming the canonical 30 fps rate the annotation file counts in."""
        return (self.video_end_frame - self.video_start_frame) // max(1, round(CANONICAL_FPS / self.clip_fps)) + 1


@dataclass
class ExtractReport:
    """What :func:`extract_clips` did, by clip uid."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already present and valid
    failed: dict[str, str] = field(default_factory=dict)  # clip_uid -> reason

    @property
    def clips(self) -> int:
        """Clips handled: written, skipped and failed."""
        return len(self.written) + len(self.skipped) + len(self.failed)


def _max_frame(clip: ClipEntry) -> int:
    frames = [-1]
    for ann in clip.annotations:
        for r in ann.query_sets.values():
            if not r.is_valid:
                continue
            frames += [r.visual_crop_frame, r.query_frame]
            frames += [f for f, _ in r.response_track or ()] + [f for f, _ in r.lt_track or ()]
    return max(frames)


def extract_jobs(annotation_sets: Iterable[AnnotationSet]) -> list[ExtractJob]:
    """One job per distinct clip uid (clips with a null uid, as in the test split, have no clip to extract).

    Raises:
        AnnotationError: a clip without ``video_start_frame``, ``video_end_frame`` or ``clip_fps``.
    """
    jobs: dict[str, ExtractJob] = {}
    for ann_set in annotation_sets:
        for vi, video in enumerate(ann_set.videos):
            for ci, clip in enumerate(video.clips):
                if clip.clip_uid is None:
                    continue
                for key in ("video_start_frame", "video_end_frame", "clip_fps"):
                    if getattr(clip, key) is None:
                        where = f"videos[{vi}].clips[{ci}].{key}"
                        raise AnnotationError(f"{ann_set.path.name}: {where}: missing (needed to extract clips)")
                job = ExtractJob(
                    clip_uid=clip.clip_uid,
                    video_uid=video.video_uid,
                    video_start_frame=int(clip.video_start_frame),
                    video_end_frame=int(clip.video_end_frame),
                    clip_fps=float(clip.clip_fps),
                    max_annotated_frame=_max_frame(clip),
                )
                previous = jobs.get(job.clip_uid)
                if previous is not None:
                    job = replace(
                        previous, max_annotated_frame=max(previous.max_annotated_frame, job.max_annotated_frame)
                    )
                jobs[job.clip_uid] = job
    return list(jobs.values())


def frame_step(video_fps: float, clip_fps: float, path: Path) -> int:
    """Source frames per clip frame (6 for 30 -> 5 fps); the rates must divide."""
    step = round(video_fps / clip_fps)
    if step < 1 or abs(video_fps / clip_fps - step) > 0.01 * step:
        raise VideoError(f"{path}: video fps {video_fps:.3f} is not a multiple of clip fps {clip_fps}")
    return step


def output_size(height: int, width: int, downscale_height: int | None) -> tuple[int, int]:
    """(height, width) of the written clip: scaled to ``downscale_height`` if given, both sides even (yuv420p)."""
    if downscale_height is not None and downscale_height > 0:
        width = round(width * downscale_height / height)
        height = downscale_height
    return height - height % 2, width - width % 2


def extract_clip(video_path: Path, job: ExtractJob, out_path: Path, downscale_height: int | None = None) -> int:
    """Write ``out_path`` (atomically) with the clip's frames at ``clip_fps``. Returns the number of frames.

    Raises:
        VideoError: unreadable source video, incompatible frame rates, or no frame of the clip in the video.
    """
    with VideoReader(video_path) as reader:
        step = frame_step(reader.fps, job.clip_fps, video_path)
        size = output_size(reader.height, reader.width, downscale_height)
        stop = min(job.video_end_frame + 1, reader.num_frames)
        if stop <= job.video_start_frame:
            raise VideoError(
                f"{video_path}: clip {job.clip_uid} starts at frame {job.video_start_frame} "
                f"but the video has {reader.num_frames} frames"
            )
        if job.video_end_frame >= reader.num_frames:
            log.warning("%s: video ends before clip %s's last frame %d", video_path, job.clip_uid, job.video_end_frame)
        same_size = size == (reader.height, reader.width)
        frames = reader.iter_frames(job.video_start_frame, stop, step, size=None if same_size else size)
        try:
            return write_video(out_path, frames, job.clip_fps)
        except ValueError as exc:
            raise VideoError(f"{out_path}: cannot write clip ({exc})") from exc


def validate_clip(path: Path, job: ExtractJob) -> list[str]:
    """Problems of a written clip: unreadable, wrong frame rate, wrong frame count, annotated frames out of range."""
    try:
        with VideoReader(path) as reader:
            count, fps = reader.num_frames, reader.fps
    except VideoError as exc:
        return [str(exc)]
    problems = []
    if abs(fps - job.clip_fps) > 0.01:
        problems.append(f"{path}: {fps:.3f} fps, expected {job.clip_fps}")
    if count != job.num_frames:
        problems.append(f"{path}: {count} frames, expected {job.num_frames}")
    if job.max_annotated_frame >= count:
        problems.append(f"{path}: annotated frame {job.max_annotated_frame} is beyond the clip's {count} frames")
    return problems


def _run_job(args: tuple[ExtractJob, Path, Path, int | None]) -> tuple[str, str, str]:
    """(clip_uid, "written" | "skipped" | "failed", reason). Runs in a worker process."""
    job, videos_dir, out_dir, downscale_height = args
    out_path = file_in(out_dir, job.clip_uid, ".mp4")
    video_path = file_in(videos_dir, job.video_uid, ".mp4")
    if out_path.resolve() == video_path.resolve():
        return job.clip_uid, "failed", f"{out_path}: is the source video itself; give another output folder"
    if out_path.exists() and not validate_clip(out_path, job):
        return job.clip_uid, "skipped", ""
    try:
        extract_clip(video_path, job, out_path, downscale_height)
    except PRVQLError as exc:
        return job.clip_uid, "failed", str(exc)
    problems = validate_clip(out_path, job)
    return job.clip_uid, ("failed" if problems else "written"), "; ".join(problems)


def extract_clips(
    jobs: list[ExtractJob],
    videos_dir: str | Path,
    out_dir: str | Path,
    downscale_height: int | None = None,
    workers: int = 1,
    progress: bool = True,
) -> ExtractReport:
    """Extract and validate every clip; resumable (valid clips already in ``out_dir`` are skipped).

    A clip whose video is missing or unreadable is reported in ``ExtractReport.failed``, never fatal. ``out_dir`` is
    created by the first clip written: if none is, a new ``out_dir`` is not left behind.
    """
    videos_dir, out_dir = Path(videos_dir), Path(out_dir)
    existed = out_dir.exists()
    report = ExtractReport()
    tasks = [(job, videos_dir, out_dir, downscale_height) for job in jobs]
    bar = progress_bar("extracting clips", len(tasks), "clip", enabled=progress)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_run_job, tasks)
            for result in results:
                _record(report, result)
                bar.update()
    else:
        for task in tasks:
            _record(report, _run_job(task))
            bar.update()
    bar.close()
    if not existed and out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()  # a clip failed after its folder was made
    return report


def _record(report: ExtractReport, result: tuple[str, str, str]) -> None:
    clip_uid, status, reason = result
    if status == "written":
        report.written.append(clip_uid)
    elif status == "skipped":
        report.skipped.append(clip_uid)
    else:
        report.failed[clip_uid] = reason
        log.warning("clip %s: %s", clip_uid, reason)


def extract_annotated_clips(
    annotation_files: Sequence[str | Path],
    videos_dir: str | Path,
    output_dir: str | Path,
    *,
    downscale_height: int | None = None,
    workers: int = 1,
    progress: bool = True,
) -> ExtractReport:
    """Cut every clip the annotation files name out of its canonical video (:func:`extract_clips`).

    Every input is checked before anything is written.

    Args:
        annotation_files: official VQ2D JSON files (any split).
        videos_dir: folder of canonical ``<video_uid>.mp4``.
        output_dir: the clips' folder (created); must not be ``videos_dir``.
        downscale_height: resize the clips to this height in pixels; ``None`` keeps the videos' size.
        workers: parallel processes.
        progress: show a progress bar.

    Raises:
        PRVQLError: one line naming the file or the field (``"output_dir"``, ``"videos_dir"``) at fault.
    """
    check_output_dir(output_dir, "output_dir")
    sets = [load_annotations(path) for path in annotation_files]
    check_input_dir(videos_dir, "folder of <video_uid>.mp4", field="videos_dir")
    if Path(output_dir).resolve() == Path(videos_dir).resolve():
        raise PRVQLError(
            "must differ from the videos' folder (a clip could overwrite a video of the same name)", field="output_dir"
        )
    return extract_clips(extract_jobs(sets), videos_dir, output_dir, downscale_height, workers, progress)
