"""Predictions for a whole Ego4D annotation file: clip by clip, cached per query, resumable, shardable.

Each valid query's per-frame result (:class:`~prvql.infer.score_cache.FrameScores`) is cached as
``CACHE_DIR/<key>.npz`` (written atomically) as soon as its clip is done, so an interrupted run resumes without
recomputing, and several processes can share the work: rank ``r`` of ``world`` takes the clips ``i`` with
``i % world == r``. When every rank is done, one process turns the cached curves into response tracks
(:func:`tracks_from_cache`) and writes the challenge file.

A clip that is missing or cannot be decoded is logged and skipped: its queries get no cache entry and come out
empty. Query sets flagged invalid and clips without a ``clip_uid`` come out empty too.

:func:`predict_annotation_file` does all of it, under ``torchrun`` or in one process: what ``prvql predict`` runs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from prvql.atomic import atomic_write_json
from prvql.boxes import rescale_boxes
from prvql.config import Config, config_to_dict
from prvql.data.annotations import AnnotationSet, QueryRecord, load_annotations
from prvql.data.transforms import prepare_query
from prvql.data.video import VideoReader
from prvql.distributed import barrier, init_distributed, shutdown
from prvql.errors import PRVQLError, VideoError
from prvql.infer.postprocess import PostProcessor, build_postprocessor
from prvql.infer.predictions import write_predictions
from prvql.infer.predictor import ClipQuery, Predictor, build_predictor
from prvql.infer.score_cache import ScoreCache
from prvql.infer.trained_model import default_weights_path, load_inference_model
from prvql.metrics.structures import ResponseTrack
from prvql.paths import check_input_dir, check_output_dir, check_output_file, file_in
from prvql.progress import tracked

logger = logging.getLogger(__name__)

POLL_SECONDS = 5.0  # how often rank 0 looks for the other ranks' done markers


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
    progress: Callable[[Sequence[SearchJob]], Iterable[SearchJob]] = lambda jobs: jobs,
) -> list[str]:
    """Search every job's clip for its queries and cache the results.

    Args:
        predictor: the Predictor.
        jobs: the clips to do (already this rank's share).
        clips_dir: folder of ``<clip_uid>.mp4``.
        cache: where results go.
        resume: skip queries already in the cache (a clip whose queries are all cached is not even opened).
        progress: wraps the job sequence, e.g. :func:`prvql.progress.tracked`.

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


@dataclass(frozen=True)
class PredictionRun:
    """What :func:`predict_annotation_file` wrote (on rank 0).

    Attributes:
        output: the challenge predictions JSON.
        predicted: query sets with a cached result (a response track, maybe empty).
        valid: valid query sets in the annotation file.
        failed_clips: uids of the clips missing or unreadable on any rank (their queries are empty).
    """

    output: Path
    predicted: int
    valid: int
    failed_clips: list[str]


def predict_annotation_file(
    annotations: str | Path,
    clips_dir: str | Path,
    output: str | Path,
    *,
    config: str | Path | Config | None = None,
    weights: str | Path | None = None,
    overrides: Sequence[str] = (),
    cache_dir: str | Path | None = None,
    resume: bool = False,
    max_clips: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> PredictionRun | None:
    """Search every valid query set of ``annotations`` in its clip and write the challenge predictions file.

    Every input is checked before any work or write. Under ``torchrun``, rank ``r`` of ``world`` searches the
    clips ``i`` with ``i % world == r`` (of the first ``max_clips``); each rank marks its end with
    ``CACHE/done.<rank>.json`` and rank 0, once every rank is done, turns the cached curves into tracks and writes
    ``output``.

    Args:
        annotations: Ego4D VQ2D annotation file.
        clips_dir: folder of ``<clip_uid>.mp4`` (5 fps clips).
        output: the predictions JSON to write.
        config, weights, overrides: the model (:func:`prvql.infer.trained_model.load_inference_model`).
        cache_dir: per-query score folder; ``None`` = ``<output>.cache``.
        resume: keep the cached results (and search only the queries without one); else the cache is cleared.
        max_clips: search only the first N clips with a valid query set (file order); the others come out empty.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (:func:`prvql.distributed.init_distributed`).
        progress: show the progress of each rank (:func:`prvql.progress.progress_bar`: a bar on a terminal, a
            line per phase elsewhere).

    Returns:
        What was written, on rank 0; ``None`` on the other ranks.

    Raises:
        PRVQLError: one line naming the file or the field (``"output"``, ``"max_clips"``, ``"cache_dir"``,
            ``"clips_dir"``, ``"weights"``, ``"device"``) at fault.
    """
    output = check_output_file(output, "output")
    if max_clips is not None and max_clips < 1:
        raise PRVQLError(f"must be >= 1 (got {max_clips})", field="max_clips")
    cache = ScoreCache(cache_dir if cache_dir is not None else output.with_name(output.name + ".cache"))
    check_output_dir(cache.root, "cache_dir")
    annotation_set = load_annotations(annotations)
    check_input_dir(clips_dir, "folder of <clip_uid>.mp4", field="clips_dir")
    cfg, model = load_inference_model(config, weights, overrides)
    postprocess = build_postprocessor(cfg.inference)
    info = init_distributed(device)
    try:
        predictor = build_predictor(cfg, model, info.device)  # refuses bad inference settings before any write
        if info.is_main:
            _prepare_cache(cache, annotation_set, cfg, weights, resume)
        barrier()
        jobs = search_jobs(annotation_set)[:max_clips][info.rank :: info.world_size]

        def bar(items: Sequence[SearchJob]) -> Iterable[SearchJob]:
            desc = "searching" if info.world_size == 1 else f"searching (rank {info.rank})"
            return tracked(items, desc, unit="clip", enabled=progress, position=info.rank)

        failed = predict_search_jobs(predictor, jobs, clips_dir, cache, resume=resume, progress=bar)
        atomic_write_json(cache.root / f"done.{info.rank}.json", {"failed_clips": failed})
        if not info.is_main:
            return None
        failed = _wait_for_ranks(cache.root, info.world_size)
    finally:
        shutdown()
    tracks = tracks_from_cache(annotation_set, cache, postprocess)
    write_predictions(output, annotation_set, tracks)
    valid = sum(r.is_valid for r in annotation_set.records())
    return PredictionRun(output, len(tracks), valid, failed)


def _prepare_cache(
    cache: ScoreCache, annotations: AnnotationSet, cfg: Config, weights: str | Path | None, resume: bool
) -> None:
    """Rank 0, before the search: record the settings, drop the old done markers, clear the cache (or, resuming,
    only its unreadable entries)."""
    cache.root.mkdir(parents=True, exist_ok=True)
    cache.write_meta(config_to_dict(cfg), weights if weights is not None else default_weights_path(), resume)
    for marker in cache.root.glob("done.*.json"):
        marker.unlink()
    if not resume:
        cache.clear()
    else:
        cache.drop_unreadable([r.key for r in annotations.records() if r.is_valid and r.clip_uid])


def _wait_for_ranks(cache_dir: Path, world_size: int) -> list[str]:
    """Block until every rank's ``done.<rank>.json`` exists; return the clips they could not read."""
    markers = [cache_dir / f"done.{rank}.json" for rank in range(world_size)]
    while not all(m.exists() for m in markers):
        time.sleep(POLL_SECONDS)
    return [clip for m in markers for clip in json.loads(m.read_text())["failed_clips"]]
