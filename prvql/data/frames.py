"""Where training frames come from: the JPEG frame cache when it holds them, else the 5 fps clip mp4.

Cache layout (written by ``prvql data cache-frames``)::

    FRAMES_DIR/<clip_uid>/frame_0000001.jpg    clip frame 0 (1-based names, as the Ego4D tools write them)
    FRAMES_DIR/<clip_uid>/frames.json          {"num_frames": N, "height": H, "width": W} of the cached images

Cached frames may be smaller than the clip (``--short-side``); readers scale boxes by the frame size they get.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from prvql.atomic import atomic_path, atomic_write_json
from prvql.data.annotations import QueryRecord, load_annotations
from prvql.data.video import VideoReader
from prvql.errors import PRVQLError
from prvql.paths import check_input_dir, check_output_dir, file_in
from prvql.progress import progress_bar

log = logging.getLogger(__name__)

META_NAME = "frames.json"


def frame_filename(index: int) -> str:
    """Cache file name of clip frame ``index`` (0-based index, 1-based name)."""
    return f"frame_{index + 1:07d}.jpg"


class FrameSource:
    """Reads clip frames by index from ``frames_dir`` (JPEG cache) or ``clips_dir/<clip_uid>.mp4``.

    Picklable (holds only paths), so it can live in DataLoader workers.

    Args:
        clips_dir: folder of ``<clip_uid>.mp4`` clips at 5 fps.
        frames_dir: optional JPEG cache; used for a read when every requested frame is cached.
    """

    def __init__(self, clips_dir: str | Path, frames_dir: str | Path | None = None) -> None:
        self.clips_dir = Path(clips_dir)
        self.frames_dir = Path(frames_dir) if frames_dir is not None else None

    def clip_path(self, clip_uid: str) -> Path:
        """The clip's mp4, ``clips_dir/<clip_uid>.mp4``."""
        return file_in(self.clips_dir, clip_uid, ".mp4")

    def _cache_meta(self, clip_uid: str) -> dict | None:
        if self.frames_dir is None:
            return None
        meta = file_in(self.frames_dir, clip_uid) / META_NAME
        try:
            return json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def num_frames(self, clip_uid: str) -> int:
        """Frames in the clip (from the cache's metadata when present, else from the mp4).

        Raises:
            VideoError: neither the cache nor a readable clip exists.
        """
        meta = self._cache_meta(clip_uid)
        if meta is not None:
            return int(meta["num_frames"])
        with VideoReader(self.clip_path(clip_uid)) as reader:
            return reader.num_frames

    def read(self, clip_uid: str, indices: Sequence[int]) -> np.ndarray:
        """Frames of ``clip_uid`` at ``indices``: uint8 [N, H, W, 3] RGB.

        Raises:
            VideoError: a frame is neither cached nor readable from the clip.
        """
        if self.frames_dir is not None:
            folder = file_in(self.frames_dir, clip_uid)
            paths = [folder / frame_filename(int(i)) for i in indices]
            if paths and all(p.is_file() for p in paths):
                try:
                    return np.stack([_read_jpeg(p) for p in paths])
                except (OSError, ValueError) as exc:
                    log.warning("%s: unreadable cached frame (%s); reading the clip instead", folder, exc)
        with VideoReader(self.clip_path(clip_uid)) as reader:
            return reader.read(indices)


def _read_jpeg(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def needed_frames(record: QueryRecord, window: int, num_frames: int) -> set[int]:
    """Clip frames a training window for ``record`` can touch: its track extended by ``window`` on both sides,
    plus the visual-crop frame."""
    track = record.lt_track or record.response_track or ()
    frames = {record.visual_crop_frame}
    if track:
        lo, hi = track[0][0], track[-1][0]
        frames.update(range(max(0, lo - window), min(num_frames, hi + window + 1)))
    return {f for f in frames if 0 <= f < num_frames}


@dataclass
class CacheReport:
    """What :func:`cache_frames` did."""

    written: int = 0  # frames written
    clips: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # clip_uid -> reason


def cache_clip(
    clip_path: Path, out_dir: Path, frames: Iterable[int], short_side: int | None = None, quality: int = 90
) -> int:
    """Write the given frames of one clip as JPEG (resized so the short side is ``short_side``). Returns frames written.

    Existing frame files are kept (resumable); ``frames.json`` is (re)written last.
    """
    with VideoReader(clip_path) as reader:
        height, width = reader.height, reader.width
        if short_side is not None and short_side > 0:
            scale = short_side / min(height, width)
            height, width = round(height * scale), round(width * scale)
        size = None if (height, width) == (reader.height, reader.width) else (height, width)
        todo = sorted(f for f in set(frames) if f < reader.num_frames and not (out_dir / frame_filename(f)).is_file())
        out_dir.mkdir(parents=True, exist_ok=True)
        if todo:
            for index, frame in zip(todo, reader.read(todo, size=size), strict=True):
                with atomic_path(out_dir / frame_filename(index)) as tmp:
                    Image.fromarray(frame).save(tmp, format="JPEG", quality=quality)
        atomic_write_json(out_dir / META_NAME, {"num_frames": reader.num_frames, "height": height, "width": width})
    return len(todo)


def _cache_job(args: tuple[str, Path, Path, list[int], int | None, int]) -> tuple[str, int, str]:
    clip_uid, clip_path, out_dir, frames, short_side, quality = args
    try:
        return clip_uid, cache_clip(clip_path, out_dir, frames, short_side, quality), ""
    except PRVQLError as exc:
        return clip_uid, 0, str(exc)


def cache_frames(
    records: Sequence[QueryRecord],
    clips_dir: str | Path,
    frames_dir: str | Path,
    window: int,
    short_side: int | None = None,
    quality: int = 90,
    workers: int = 1,
    progress: bool = True,
) -> CacheReport:
    """Cache, for every record, the frames training can read (see :func:`needed_frames`).

    Args:
        records: training/validation records (records without a clip uid are ignored).
        window: frames per training window (``model.num_frames``).
        short_side: resize so the short side has this many pixels; None keeps the clip's size.
    """
    clips_dir, frames_dir = Path(clips_dir), Path(frames_dir)
    wanted: dict[str, set[int]] = {}
    for r in records:
        if r.clip_uid is None:
            continue
        limit = r.clip_num_frames if r.clip_num_frames is not None else np.iinfo(np.int32).max
        wanted.setdefault(r.clip_uid, set()).update(needed_frames(r, window, limit))
    tasks = [
        (uid, file_in(clips_dir, uid, ".mp4"), file_in(frames_dir, uid), sorted(frames), short_side, quality)
        for uid, frames in wanted.items()
    ]
    report = CacheReport()
    bar = progress_bar("caching frames", len(tasks), "clip", enabled=progress)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_cache_job, tasks))
    else:
        results = map(_cache_job, tasks)
    for clip_uid, written, reason in results:
        bar.update()
        if reason:
            report.failed[clip_uid] = reason
            log.warning("clip %s: %s", clip_uid, reason)
        else:
            report.clips += 1
            report.written += written
    bar.close()
    return report


def cache_annotated_frames(
    annotation_files: Sequence[str | Path],
    clips_dir: str | Path,
    output_dir: str | Path,
    *,
    window: int,
    short_side: int | None = None,
    quality: int = 90,
    workers: int = 1,
    progress: bool = True,
) -> CacheReport:
    """Cache the frames training reads for every valid query set of the annotation files (:func:`cache_frames`).

    Every input is checked before anything is written.

    Args:
        annotation_files: VQ2D (or EgoTracks) JSON files.
        clips_dir: folder of ``<clip_uid>.mp4``.
        output_dir: ``FRAMES_DIR`` (created).
        window, short_side, quality, workers, progress: as in :func:`cache_frames`.

    Raises:
        PRVQLError: one line naming the file or the field (``"output_dir"``, ``"clips_dir"``) at fault.
    """
    check_output_dir(output_dir, "output_dir")
    sets = [load_annotations(path) for path in annotation_files]
    check_input_dir(clips_dir, "folder of <clip_uid>.mp4", field="clips_dir")
    records = [r for s in sets for r in s.valid_records()]
    return cache_frames(
        records,
        clips_dir,
        output_dir,
        window=window,
        short_side=short_side,
        quality=quality,
        workers=workers,
        progress=progress,
    )
