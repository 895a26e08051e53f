"""Synthetic VQ2D episodes in the official Ego4D layout, deterministic by seed.

A clip is an "ego" camera (pans between fixations, zoom, roll) looking around a photograph; real objects cut from
other photographs sit in it, move, turn (perspective yaw and roll) and change scale; camera-attached "hands"
occlude them; recoloured copies of the targets and other objects act as distractors. Ground truth comes from the
rendered alpha masks: a target is annotated in a frame when enough of it is visible, with the box of its visible
pixels. Per target, the response track is the last visible run before ``query_frame`` and the visual crop comes
from another run (another viewpoint, scale and time).

:func:`write_synthetic_dataset` renders 30 fps canonical videos, cuts the 5 fps clips with the real extraction
code and writes ``vq_train.json`` / ``vq_val.json`` (schema v1.0.5). :func:`make_episode` renders one fresh clip
in memory (for the demo).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prvql.atomic import atomic_write_text
from prvql.data.annotations import load_annotations
from prvql.data.extract import ExtractReport, extract_clips, extract_jobs
from prvql.data.video import write_video
from prvql.progress import tracked
from prvql.synth.scene import Scene, SynthOptions, make_scene, render, scene_time

__all__ = [
    "Episode",
    "SynthOptions",
    "make_episode",
    "make_query_set",
    "make_scene",
    "render",
    "write_synthetic_dataset",
]

ANNOTATION_VERSION = "1.0.5"
EPISODE_SCENES = 16  # scenes make_episode tries before giving up on a seed


def _uid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _runs(visible: list[bool]) -> list[tuple[int, int]]:
    """Maximal runs of True as (first, last) inclusive."""
    runs, start = [], None
    for j, v in enumerate([*visible, False]):
        if v and start is None:
            start = j
        elif not v and start is not None:
            runs.append((start, j - 1))
            start = None
    return runs


def _box_json(frame: int, box: tuple[float, float, float, float], opts: SynthOptions, video_frame: int) -> dict:
    x1, y1, x2, y2 = box
    return {
        "frame_number": frame,
        "x": x1,
        "y": y1,
        "width": x2 - x1,
        "height": y2 - y1,
        "rotation": 0.0,
        "original_width": opts.frame_width,
        "original_height": opts.frame_height,
        "video_frame_number": video_frame,
    }


def make_query_set(rng: np.random.Generator, boxes: list, title: str, opts: SynthOptions, vsf: int) -> dict:
    """A query set for one target from its per-clip-frame boxes (None where not visible), official schema.

    The response track is a visible run followed by a query frame before the next run; the visual crop is the
    largest box of a different run. Fewer than two runs make an invalid query set (``is_valid: false``).
    ``synthetic_occurrences`` (not an official field; readers ignore it) lists every clip frame where the target is
    visible, for per-frame evaluation of score curves (experiments/demo_model/demo_heldout.py).
    """
    n = len(boxes)
    step = round(opts.video_fps / opts.clip_fps)
    runs = _runs([b is not None for b in boxes])
    candidates = [k for k, (_, last) in enumerate(runs) if last < n - 1]
    if len(runs) < 2 or not candidates:
        return {"is_valid": False, "errors": ["fewer than two sightings"], "warnings": [], "object_title": title}
    r = candidates[int(rng.integers(len(candidates)))]
    first, last = runs[r]
    next_start = runs[r + 1][0] if r + 1 < len(runs) else n - 1
    query_frame = int(rng.integers(last + 1, next_start + 1))
    others = [k for k in range(len(runs)) if k != r]
    o_first, o_last = runs[others[int(rng.integers(len(others)))]]
    area = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes[o_first : o_last + 1]]
    vc = o_first + int(np.argmax(area))
    return {
        "is_valid": True,
        "errors": [],
        "warnings": [],
        "query_frame": query_frame,
        "query_video_frame": vsf + query_frame * step,
        "object_title": title,
        "visual_crop": _box_json(vc, boxes[vc], opts, vsf + vc * step),
        "response_track": [_box_json(j, boxes[j], opts, vsf + j * step) for j in range(first, last + 1)],
        "synthetic_occurrences": [j for j, b in enumerate(boxes) if b is not None],
    }


def _step(opts: SynthOptions) -> int:
    step = round(opts.video_fps / opts.clip_fps)
    if abs(opts.video_fps / opts.clip_fps - step) > 1e-6:
        raise ValueError(f"video fps {opts.video_fps} must be a multiple of clip fps {opts.clip_fps}")
    return step


@dataclass
class _ClipPlan:
    clip_uid: str
    scene: Scene
    rng: np.random.Generator
    boxes: list = field(default_factory=list)  # [clip frame][target] box or None


def _clip_frames(plan: _ClipPlan, opts: SynthOptions) -> Iterator[np.ndarray]:
    """Canonical (30 fps) frames of one clip with its lead-in/out; records the clip frames' boxes."""
    step = _step(opts)
    last = (opts.num_frames - 1) * step
    for s in range(-opts.lead_frames, last + opts.lead_frames + 1):
        keep = s >= 0 and s % step == 0 and s <= last
        frame, boxes = render(plan.scene, scene_time(opts, s), keep, opts)
        if keep:
            plan.boxes.append(boxes)
        yield frame


def _clip_json(plan: _ClipPlan, opts: SynthOptions, vsf: int) -> dict:
    step = _step(opts)
    vef = vsf + (opts.num_frames - 1) * step
    titles = [plan.scene.things[i].title for i in plan.scene.targets]
    sets = [make_query_set(plan.rng, [b[k] for b in plan.boxes], titles[k], opts, vsf) for k in range(len(titles))]
    per = max(1, opts.query_sets_per_annotation)
    annotations = [
        {
            "annotation_uid": _uid(plan.rng),
            "query_sets": {str(i + 1): qs for i, qs in enumerate(sets[a : a + per])},
        }
        for a in range(0, len(sets), per)
    ]
    return {
        "clip_uid": plan.clip_uid,
        "video_start_sec": vsf / opts.video_fps,
        "video_end_sec": vef / opts.video_fps,
        "video_start_frame": vsf,
        "video_end_frame": vef,
        "clip_start_sec": 0.0,
        "clip_end_sec": (vef - vsf) / opts.video_fps,
        "clip_fps": opts.clip_fps,
        "annotations": annotations,
    }


@dataclass(frozen=True)
class _VideoJob:
    out_dir: Path
    split: str
    clip_seeds: list[np.random.SeedSequence]
    video_seed: np.random.SeedSequence
    opts: SynthOptions
    pool: str | None
    clips_only: bool  # write the 5 fps clips directly (no canonical video)


def _render_video(job: _VideoJob) -> dict:
    """Render one canonical video holding one clip per seed, write it, return its annotation entry."""
    opts, out_dir = job.opts, job.out_dir
    step = _step(opts)
    duration = (opts.num_frames - 1) * step + 1
    scene_duration = scene_time(opts, duration)
    plans = []
    for seed in job.clip_seeds:
        rng = np.random.default_rng(seed)
        plans.append(_ClipPlan(_uid(rng), make_scene(rng, opts, job.pool, scene_duration), rng))
    video_uid = _uid(np.random.default_rng(job.video_seed))
    clip_span = duration - 1 + 2 * opts.lead_frames + 1

    def frames() -> Iterator[np.ndarray]:
        for plan in plans:
            yield from _clip_frames(plan, opts)

    if job.clips_only:
        for plan in plans:
            rendered = [render(plan.scene, scene_time(opts, j * step), True, opts) for j in range(opts.num_frames)]
            plan.boxes.extend(b for _, b in rendered)
            write_video(out_dir / "clips" / f"{plan.clip_uid}.mp4", (f for f, _ in rendered), opts.clip_fps)
    else:
        write_video(out_dir / "videos" / f"{video_uid}.mp4", frames(), opts.video_fps)
    clips = [_clip_json(p, opts, k * clip_span + opts.lead_frames) for k, p in enumerate(plans)]
    return {"video_uid": video_uid, "split": job.split, "clips": clips}


def write_synthetic_dataset(
    out_dir: str | Path,
    num_clips: int,
    seed: int = 0,
    opts: SynthOptions | None = None,
    val_fraction: float = 0.25,
    clips_per_video: int = 2,
    workers: int = 1,
    progress: bool = True,
    clips_only: bool = False,
) -> ExtractReport:
    """Write ``out_dir/{videos,clips}/`` and ``out_dir/vq_{train,val}.json`` (deterministic by ``seed``).

    Canonical 30 fps videos hold ``clips_per_video`` clips each (with lead-in/out frames around every clip),
    rendered by ``workers`` processes; the 5 fps clips are then cut from them by
    :func:`prvql.data.extract.extract_clips`. ``clips_only`` renders just the 5 fps clip frames and writes the clips
    directly (6x less rendering; no ``videos/``; the annotations are the same as if the clips had been cut).

    Returns:
        The extraction report (every clip should be in ``written``).
    """
    from concurrent.futures import ProcessPoolExecutor

    opts = opts or SynthOptions()
    out_dir = Path(out_dir)
    num_val = 0 if num_clips < 2 else min(num_clips - 1, max(1, round(num_clips * val_fraction)))
    seeds = np.random.SeedSequence(seed).spawn(num_clips)
    _step(opts)
    splits = {"train": list(range(num_clips - num_val)), "val": list(range(num_clips - num_val, num_clips))}
    jobs = []
    for split, indices in splits.items():
        pool = ({"train": "train", "val": "heldout"}[split]) if opts.split_imagery else None
        for v in range(0, len(indices), clips_per_video):
            chunk = indices[v : v + clips_per_video]
            clip_seeds = [seeds[i] for i in chunk]
            jobs.append(_VideoJob(out_dir, split, clip_seeds, seeds[chunk[0]].spawn(1)[0], opts, pool, clips_only))
    desc = "rendering clips" if clips_only else "rendering videos"
    if workers > 1:
        with ProcessPoolExecutor(workers) as executor:
            videos = list(tracked(executor.map(_render_video, jobs), desc, len(jobs), "video", enabled=progress))
    else:
        videos = list(tracked(map(_render_video, jobs), desc, len(jobs), "video", enabled=progress))
    for split in splits:
        document = {
            "version": ANNOTATION_VERSION,
            "date": "synthetic",
            "description": f"prvql synthetic VQ2D episodes (seed {seed}, split {split})",
            "videos": [video for video in videos if video["split"] == split],
        }
        atomic_write_text(out_dir / f"vq_{split}.json", json.dumps(document, indent=1))
    if clips_only:
        return ExtractReport(written=[clip["clip_uid"] for video in videos for clip in video["clips"]])
    sets = [load_annotations(out_dir / f"vq_{split}.json") for split in splits]
    return extract_clips(extract_jobs(sets), out_dir / "videos", out_dir / "clips", workers=workers, progress=progress)


@dataclass
class Episode:
    """One synthetic clip at 5 fps with one query.

    Attributes:
        frames: uint8 [N, H, W, 3].
        query_frame: search frames are < query_frame.
        visual_crop_frame: frame of the visual crop.
        visual_crop_box: xyxy pixels.
        query: uint8 [h, w, 3], the visual crop's pixels.
        response_track: ((frame, xyxy), ...) of the last sighting before ``query_frame``.
        object_title: the target's name.
        fps: frame rate of ``frames``.
    """

    frames: np.ndarray
    query_frame: int
    visual_crop_frame: int
    visual_crop_box: tuple[float, float, float, float]
    query: np.ndarray
    response_track: tuple[tuple[int, tuple[float, float, float, float]], ...]
    object_title: str
    fps: float


def make_episode(
    seed: int,
    opts: SynthOptions | None = None,
    pool: str | None = "heldout",
    progress: Callable[[int, int], None] | None = None,
) -> Episode:
    """Render ONE fresh clip in memory (no files) and return its first valid query.

    ``pool="heldout"`` uses only pictures that training with ``split_imagery`` never sees. ``progress(done, total)``
    is called after each frame rendered (a scene without a valid query is dropped and the count starts again).
    """
    opts = opts or SynthOptions()
    step = _step(opts)
    duration = scene_time(opts, (opts.num_frames - 1) * step + 1)
    for attempt in range(EPISODE_SCENES):
        rng = np.random.default_rng([seed, attempt])
        scene = make_scene(rng, opts, pool, duration)
        rendered = []
        for j in range(opts.num_frames):
            rendered.append(render(scene, scene_time(opts, j * step), True, opts))
            if progress is not None:
                progress(j + 1, opts.num_frames)
        for k, i in enumerate(scene.targets):
            boxes = [b[k] for _, b in rendered]  # xyxy per frame, None where not visible
            qs = make_query_set(rng, boxes, scene.things[i].title, opts, 0)
            if not qs["is_valid"]:
                continue
            frames = np.stack([f for f, _ in rendered])
            vc = qs["visual_crop"]["frame_number"]
            box = tuple(float(v) for v in boxes[vc])
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            track = tuple(
                (b["frame_number"], tuple(float(v) for v in boxes[b["frame_number"]])) for b in qs["response_track"]
            )
            return Episode(
                frames=frames,
                query_frame=qs["query_frame"],
                visual_crop_frame=vc,
                visual_crop_box=box,
                query=frames[vc, y1:y2, x1:x2].copy(),
                response_track=track,
                object_title=qs["object_title"],
                fps=opts.clip_fps,
            )
    raise RuntimeError(f"no valid query in {EPISODE_SCENES} scenes for seed {seed}; use more frames")
