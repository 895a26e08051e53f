"""Predictions for a whole Ego4D annotation file: clip by clip, cached per query, resumable, shardable.

Each valid query's per-frame result (:class:`~prvql.infer.score_cache.FrameScores`) is cached as
``CACHE_DIR/<key>.npz`` (written atomically) as soon as its clip is done, so an interrupted run resumes without
recomputing, and several processes can share the work: rank ``r`` of ``world`` takes the clips ``i`` with
``i % world == r``. When every rank is done, one process turns the cached curves into response tracks
(:func:`tracks_from_cache`) and writes the challenge file.

A clip that is missing or cannot be decoded is logged and skipped: its queries get no cache entry and come out
empty. Query sets flagged invalid and clips without a ``clip_uid`` come out empty too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from prvql.boxes import rescale_boxes
from prvql.data.annotations import AnnotationSet, QueryRecord
from prvql.data.transforms import prepare_query
from prvql.data.video import VideoReader
from prvql.errors import VideoError
from prvql.infer.postprocess import PostProcessor
from prvql.infer.predictor import ClipQuery, Predictor
from prvql.infer.score_cache import ScoreCache
from prvql.metrics.structures import ResponseTrack
from prvql.paths import file_in

logger = logging.getLogger(__name__)


@dataclass
class SearchJob:
    """One clip to search: its uid and the valid query sets on it, in file order."""

    clip_uid: str
    records: list[QueryRecord]


def search_jobs(annotations: AnnotationSet) -> list[SearchJob]:
    """Clips with at least one valid query set and a clip uid, in file order (a clip listed twice is merged)."""
    jobs: dict[str, SearchJob] = {}
    for record in annotations.records():
        if record.is_valid and record.clip_uid:
            jobs.setdefault(record.clip_uid, SearchJob(record.clip_uid, [])).records.append(record)
    return list(jobs.values())


def query_for_record(reader: VideoReader, record: QueryRecord, input_size: int, released: bool = False) -> ClipQuery:
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


def predict_search_jobs(
    predictor: Predictor,
    jobs: Sequence[SearchJob],
    clips_dir: str | Path,
    cache: ScoreCache,
    *,
    resume: bool,
    progress: Callable[[Sequence[SearchJob]], Sequence[SearchJob]] = lambda jobs: jobs,
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
                            query_for_record(reader, record, predictor.input_size, predictor.released_preprocessing)
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
