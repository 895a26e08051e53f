"""Predictions for a whole Ego4D annotation file: clip by clip, cached per query, resumable, shardable.

Each valid query's per-frame result (:class:`~prvql.engine.inference.FrameScores`) is cached as
``CACHE_DIR/<key>.npz`` (written atomically) as soon as its clip is done, so an interrupted run resumes without
recomputing, and several processes can share the work: rank ``r`` of ``world`` takes the clips ``i`` with
``i % world == r``. When every rank is done, one process turns the cached curves into response tracks
(:func:`tracks_from_cache`) and writes the challenge file.

A clip that is missing or cannot be decoded is logged and skipped: its queries get no cache entry and come out
empty. Query sets flagged invalid and clips without a ``clip_uid`` come out empty too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from prvql.atomic import atomic_write_json
from prvql.boxes import rescale_boxes
from prvql.data.annotations import AnnotationSet, QueryRecord
from prvql.data.transforms import prepare_query
from prvql.data.video import VideoReader
from prvql.engine.inference import ClipQuery, FrameScores, Predictor
from prvql.engine.postprocess import PostProcessor
from prvql.errors import PRVQLError, VideoError
from prvql.metrics.structures import ResponseTrack
from prvql.paths import file_in

logger = logging.getLogger(__name__)


class ScoreCache:
    """A folder of per-query score files, ``<dir>/<key>.npz``, plus ``meta.json`` naming what produced them."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The score file of query ``key`` (a plain name: annotation and query-set uids are checked when read)."""
        return file_in(self.root, key, ".npz")

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()

    def save(self, key: str, scores: FrameScores) -> None:
        """Store the per-frame result of query ``key`` (atomically)."""
        scores.save(self.path(key))

    def load(self, key: str) -> FrameScores:
        """The per-frame result of query ``key``.

        Raises:
            PRVQLError: the file is missing, truncated or corrupt.
        """
        return FrameScores.load(self.path(key))

    def try_load(self, key: str) -> FrameScores | None:
        """The per-frame result of query ``key``, or None (with a warning) when its file is unreadable."""
        try:
            return self.load(key)
        except PRVQLError as exc:
            logger.warning("ignoring the cached result of %s: %s", key, exc)
            return None

    def drop_unreadable(self, keys: Sequence[str]) -> list[str]:
        """Remove the cached files of ``keys`` that cannot be read (truncated by a crash, corrupted), so that they
        are computed again; one warning names how many. Returns the keys dropped."""
        dropped = []
        for key in keys:
            if key in self:
                try:
                    self.load(key)
                except PRVQLError:
                    self.path(key).unlink(missing_ok=True)
                    dropped.append(key)
        if dropped:
            logger.warning(
                "%s: %d cached results were unreadable and will be computed again (%s%s)",
                self.root,
                len(dropped),
                ", ".join(dropped[:3]),
                ", ..." if len(dropped) > 3 else "",
            )
        return dropped

    def write_meta(self, config: dict, weights: str | Path, resume: bool) -> None:
        """Describe what fills the cache: the resolved config and the weights' hash (``meta.json``).

        With ``resume``, a cache whose scores came from another model, weights or window setting is refused
        (the post-processing settings may differ: they apply when the file is written); a cache whose description
        is unreadable (a crash, a corrupted disk) is emptied with a warning and computed again.

        Raises:
            PRVQLError: the existing description does not match.
        """
        meta_path = self.root / "meta.json"
        meta = {"fingerprint": fingerprint(config, weights), "config": config}
        if resume and meta_path.exists():
            try:
                old = json.loads(meta_path.read_text())["fingerprint"]
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as exc:
                logger.warning("%s: unreadable cache description (%s); recomputing every query", meta_path, exc)
                self.clear()
                old = meta["fingerprint"]
            if old != meta["fingerprint"]:
                raise PRVQLError(
                    f"{meta_path}: the cache was made with another model, weights or windows; "
                    "run without --resume to redo it"
                )
        atomic_write_json(meta_path, meta, indent=1)

    def read_config(self) -> dict | None:
        """The resolved config (a plain dict) recorded by :meth:`write_meta`, or None."""
        try:
            config = json.loads((self.root / "meta.json").read_text())["config"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
            return None
        return config if isinstance(config, dict) else None

    def clear(self) -> None:
        """Remove every score file (not the folder)."""
        for path in self.root.glob("*.npz"):
            path.unlink()


def fingerprint(config: dict, weights: str | Path | None) -> dict:
    """What makes cached scores reusable: the resolved model, data and window settings and the weights' hash."""
    digest = None
    if weights is not None:
        h = hashlib.sha256()
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
    keys = (
        "windows_per_batch",
        "window_overlap",
        "overlap_reduce",
        "flip_tta",
        "num_stages",
        "stage_mean",
        "verification",
    )
    inference = {k: config["inference"][k] for k in keys}
    return {
        "model": config["model"],
        "pad_value": config["data"]["pad_value"],
        "inference": inference,
        "weights": digest,
    }


@dataclass
class ClipJob:
    """One clip to search: its uid and the valid query sets on it, in file order."""

    clip_uid: str
    records: list[QueryRecord]


def clip_jobs(annotations: AnnotationSet) -> list[ClipJob]:
    """Clips with at least one valid query set and a clip uid, in file order (a clip listed twice is merged)."""
    jobs: dict[str, ClipJob] = {}
    for record in annotations.records():
        if record.is_valid and record.clip_uid:
            jobs.setdefault(record.clip_uid, ClipJob(record.clip_uid, [])).records.append(record)
    return list(jobs.values())


def make_query(reader: VideoReader, record: QueryRecord, input_size: int, released: bool = False) -> ClipQuery:
    """The :class:`ClipQuery` of ``record`` on the clip opened in ``reader``.

    The visual crop box is given in the annotation's ``frame_width x frame_height`` pixels; it is scaled to the
    decoded clip's resolution before cropping, and boxes come back in the annotation's resolution. ``released``:
    crop and resize as the released code does (:func:`prvql.data.transforms.prepare_query`).
    """
    if not 0 <= record.visual_crop_frame < reader.num_frames:
        raise VideoError(
            f"{reader.path}: visual_crop frame_number {record.visual_crop_frame} of {record.key} is outside the "
            f"clip's {reader.num_frames} frames"
        )
    frame = reader.read([record.visual_crop_frame])[0]
    original = (record.frame_height, record.frame_width)
    box = rescale_boxes(torch.tensor(record.visual_crop_box), original, (reader.height, reader.width))
    image = prepare_query(frame, box, input_size, released)
    return ClipQuery(record.key, image, record.query_frame, original)


def predict_clips(
    predictor: Predictor,
    jobs: Sequence[ClipJob],
    clips_dir: str | Path,
    cache: ScoreCache,
    *,
    resume: bool,
    progress: Callable[[Sequence[ClipJob]], Sequence[ClipJob]] = lambda jobs: jobs,
) -> list[str]:
    """Search every job's clip for its queries and cache the results.

    Args:
        predictor: the Predictor.
        jobs: the clips to do (already this rank's share).
        clips_dir: folder of ``<clip_uid>.mp4``.
        cache: where results go.
        resume: skip queries already in the cache (a clip whose queries are all cached is not even opened).
        progress: wraps the job sequence, e.g. ``tqdm``.

    Returns:
        uids of the clips that were missing or unreadable (their uncached queries stay empty). A query whose
        visual crop frame cannot be read is left out alone (empty) and the clip's other queries go on.
    """
    failed = []
    for job in progress(jobs):
        todo = [r for r in job.records if not (resume and r.key in cache)]
        if not todo:
            continue
        try:
            with VideoReader(file_in(clips_dir, job.clip_uid, ".mp4")) as reader:
                queries = []
                for record in todo:
                    try:
                        queries.append(
                            make_query(reader, record, predictor.input_size, predictor.released_preprocessing)
                        )
                    except VideoError as exc:
                        logger.warning("query %s will be empty: %s", record.key, exc)
                end = max((q.num_frames for q in queries), default=0)
                results = predictor.predict_clip(reader.iter_frames(0, min(end, reader.num_frames)), queries)
        except VideoError as exc:
            logger.warning("clip %s skipped, its %d queries will be empty: %s", job.clip_uid, len(todo), exc)
            failed.append(job.clip_uid)
            continue
        for key, scores in results.items():
            cache.save(key, scores)
    return failed


def tracks_from_cache(
    annotations: AnnotationSet,
    cache: ScoreCache,
    postprocess: PostProcessor,
) -> dict[str, ResponseTrack]:
    """key -> response track for every valid query with a cached result (the rest are left out = empty).

    Args:
        annotations: the annotation file.
        cache: the per-query score files.
        postprocess: turns each curve into a track; it is given the query's visual-crop frame (the searched frames
            are the clip's frames ``0 .. N-1``, so the numbers agree), for ``after_visual_crop``.
    """
    tracks = {}
    for record in annotations.records():
        if record.is_valid and record.clip_uid and record.key in cache:
            scores = cache.try_load(record.key)
            if scores is None:
                continue
            tracks[record.key] = (
                postprocess(scores.scores, scores.boxes, record.visual_crop_frame)[0]
                if len(scores)
                else ResponseTrack.empty()
            )
    return tracks
