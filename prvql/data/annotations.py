"""Ego4D VQ2D annotations (schema v1.0.5) and EgoTracks ``lt_track`` files -> typed per-query records.

The official file nests ``videos -> clips -> annotations -> query_sets``. :func:`load_annotations` keeps that
nesting (the predictions writer must mirror it, invalid query sets included) and flattens it into
:class:`QueryRecord` objects in file order. Boxes are converted from the file's (x, y, width, height) to xyxy
pixels of the ``original_width x original_height`` frame.

Valid query sets are checked strictly; every problem raises :class:`~prvql.errors.AnnotationError` whose message
names the file and the field, e.g.
``vq_val.json: videos[3].clips[0].annotations[1].query_sets["2"].visual_crop.width: must be > 0 (got 0)``.
Query sets flagged ``is_valid: false`` are parsed leniently (they are only ever emitted empty).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prvql.errors import AnnotationError

Box = tuple[float, float, float, float]
Track = tuple[tuple[int, Box], ...]

CANONICAL_FPS = 30.0  # frame rate of the Ego4D canonical videos that video_start_frame / video_end_frame count


@dataclass(frozen=True)
class QueryRecord:
    """One query set: the visual crop, the query frame and (train/val) the response track, in clip frames (5 fps)."""

    video_uid: str
    clip_uid: str | None
    annotation_uid: str
    query_set: str
    is_valid: bool
    query_frame: int  # search frames are < query_frame
    object_title: str
    frame_height: int  # original_height of the frame the boxes refer to
    frame_width: int
    visual_crop_frame: int
    visual_crop_box: Box  # xyxy pixels
    response_track: Track | None  # (frame_number, xyxy), sorted, contiguous; None in the test split
    clip_num_frames: int | None  # from video_start/end_frame and clip_fps when present
    lt_track: Track | None = None  # EgoTracks: every visible occurrence, sorted (not contiguous)

    @property
    def key(self) -> str:
        """``f"{annotation_uid}_{query_set}"``, unique per query."""
        return f"{self.annotation_uid}_{self.query_set}"

    @property
    def response_frames(self) -> tuple[int, int] | None:
        """First and last frame of the response track (inclusive), or None without one."""
        if not self.response_track:
            return None
        return self.response_track[0][0], self.response_track[-1][0]


@dataclass
class AnnotationEntry:
    """One annotation of a clip: its query sets by name ("1", "2", ...)."""

    annotation_uid: str
    query_sets: dict[str, QueryRecord]  # file order


@dataclass
class ClipEntry:
    """One clip of a video: its annotations and where it sits in the canonical video."""

    clip_uid: str | None
    annotations: list[AnnotationEntry]
    video_start_frame: int | None = None  # canonical (30 fps) frame of clip frame 0
    video_end_frame: int | None = None
    clip_fps: float | None = None
    num_frames: int | None = None


@dataclass
class VideoEntry:
    """One video of the file and its clips."""

    video_uid: str
    clips: list[ClipEntry]


@dataclass
class AnnotationSet:
    """A parsed annotation file: the video / clip / annotation / query-set nesting, in file order."""

    path: Path
    version: str
    videos: list[VideoEntry] = field(default_factory=list)

    def records(self) -> list[QueryRecord]:
        """Every query set (invalid ones included), in file order."""
        return [q for v in self.videos for c in v.clips for a in c.annotations for q in a.query_sets.values()]

    def valid_records(self) -> list[QueryRecord]:
        """Query sets usable for training: ``is_valid``, a clip uid, and a response track or an lt_track."""
        return [
            r
            for r in self.records()
            if r.is_valid and r.clip_uid is not None and (r.response_track is not None or r.lt_track is not None)
        ]

    def clips(self) -> list[tuple[str, ClipEntry]]:
        """(video_uid, clip) pairs in file order."""
        return [(v.video_uid, c) for v in self.videos for c in v.clips]


class _Parser:
    """Walks one JSON document; every error names the file and the dotted/indexed field path."""

    def __init__(self, path: Path) -> None:
        self.name = path.name

    def fail(self, where: str, message: str) -> AnnotationError:
        return AnnotationError(f"{self.name}: {where}: {message}")

    def get(self, obj: Any, key: str, where: str, kinds: type | tuple[type, ...], optional: bool = False) -> Any:
        if not isinstance(obj, dict):
            raise self.fail(where, f"expected an object, got {type(obj).__name__}")
        here = f"{where}.{key}" if where else key
        if key not in obj:
            if optional:
                return None
            raise self.fail(here, "missing")
        value = obj[key]
        if value is None and optional:
            return None
        if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
            raise self.fail(here, f"expected {_kind_name(kinds)}, got {value!r}")
        if not isinstance(value, kinds):
            raise self.fail(here, f"expected {_kind_name(kinds)}, got {value!r}")
        return value

    def number(self, obj: Any, key: str, where: str, optional: bool = False) -> float | None:
        value = self.get(obj, key, where, (int, float), optional)
        if value is not None and not math.isfinite(value):
            raise self.fail(f"{where}.{key}", f"must be finite (got {value})")
        return value

    def box(self, obj: Any, where: str, num_frames: int | None) -> tuple[int, Box, int, int]:
        """(frame_number, xyxy, original_height, original_width) of one annotated box."""
        frame = self.get(obj, "frame_number", where, int)
        if frame < 0 or (num_frames is not None and frame >= num_frames):
            raise self.fail(f"{where}.frame_number", f"must be in [0, {num_frames}) (got {frame})")
        x, y = self.number(obj, "x", where), self.number(obj, "y", where)
        w, h = self.number(obj, "width", where), self.number(obj, "height", where)
        for key, value in (("width", w), ("height", h)):
            if value <= 0:
                raise self.fail(f"{where}.{key}", f"must be > 0 (got {value})")
        ow = self.get(obj, "original_width", where, int)
        oh = self.get(obj, "original_height", where, int)
        for key, value in (("original_width", ow), ("original_height", oh)):
            if value <= 0:
                raise self.fail(f"{where}.{key}", f"must be > 0 (got {value})")
        return frame, (float(x), float(y), float(x + w), float(y + h)), oh, ow

    def track(self, items: Any, where: str, num_frames: int | None, contiguous: bool) -> Track:
        if not isinstance(items, list) or not items:
            raise self.fail(where, "expected a non-empty list of boxes")
        parsed = []
        for i, item in enumerate(items):
            frame, box, _, _ = self.box(item, f"{where}[{i}]", num_frames)
            parsed.append((frame, box))
        parsed.sort(key=lambda fb: fb[0])
        for (f0, _), (f1, _) in zip(parsed, parsed[1:], strict=False):
            if f1 == f0:
                raise self.fail(where, f"frame {f0} appears twice")
            if contiguous and f1 != f0 + 1:
                raise self.fail(where, f"must cover contiguous frames (gap between frames {f0} and {f1})")
        return tuple(parsed)

    def query_set(
        self, qs: Any, where: str, ids: tuple[str, str | None, str, str], num_frames: int | None
    ) -> QueryRecord:
        video_uid, clip_uid, annotation_uid, name = ids
        is_valid = self.get(qs, "is_valid", where, bool, optional=True)
        is_valid = True if is_valid is None else is_valid
        if not is_valid:
            return self._lenient(qs, ids)
        query_frame = self.get(qs, "query_frame", where, int)
        if query_frame < 0 or (num_frames is not None and query_frame >= num_frames):
            raise self.fail(f"{where}.query_frame", f"must be in [0, {num_frames}) (got {query_frame})")
        title = self.get(qs, "object_title", where, str, optional=True) or ""
        crop = self.get(qs, "visual_crop", where, dict)
        vc_frame, vc_box, height, width = self.box(crop, f"{where}.visual_crop", num_frames)
        response = None
        if "response_track" in qs:
            response = self.track(qs["response_track"], f"{where}.response_track", num_frames, contiguous=True)
        lt_track = None
        if "lt_track" in qs and qs["lt_track"]:
            lt_track = self.track(qs["lt_track"], f"{where}.lt_track", num_frames, contiguous=False)
        return QueryRecord(
            video_uid=video_uid,
            clip_uid=clip_uid,
            annotation_uid=annotation_uid,
            query_set=name,
            is_valid=True,
            query_frame=query_frame,
            object_title=title,
            frame_height=height,
            frame_width=width,
            visual_crop_frame=vc_frame,
            visual_crop_box=vc_box,
            response_track=response,
            clip_num_frames=num_frames,
            lt_track=lt_track,
        )

    @staticmethod
    def _lenient(qs: Any, ids: tuple[str, str | None, str, str]) -> QueryRecord:
        """An invalid query set: whatever fields are usable, zeros elsewhere; never raises."""
        qs = qs if isinstance(qs, dict) else {}
        crop = qs.get("visual_crop") if isinstance(qs.get("visual_crop"), dict) else {}

        def num(obj: dict, key: str) -> float:
            value = obj.get(key)
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0

        x, y = num(crop, "x"), num(crop, "y")
        query_frame = qs.get("query_frame")
        return QueryRecord(
            video_uid=ids[0],
            clip_uid=ids[1],
            annotation_uid=ids[2],
            query_set=ids[3],
            is_valid=False,
            query_frame=query_frame if isinstance(query_frame, int) and not isinstance(query_frame, bool) else 0,
            object_title=qs.get("object_title") if isinstance(qs.get("object_title"), str) else "",
            frame_height=int(num(crop, "original_height")),
            frame_width=int(num(crop, "original_width")),
            visual_crop_frame=int(num(crop, "frame_number")),
            visual_crop_box=(x, y, x + num(crop, "width"), y + num(crop, "height")),
            response_track=None,
            clip_num_frames=None,
        )

    def clip_length(self, clip: dict, where: str) -> tuple[int | None, int | None, float | None, int | None]:
        """(video_start_frame, video_end_frame, clip_fps, number of clip frames) where the clip gives them."""
        start = self.get(clip, "video_start_frame", where, int, optional=True)
        end = self.get(clip, "video_end_frame", where, int, optional=True)
        fps = self.number(clip, "clip_fps", where, optional=True)
        if fps is not None and fps <= 0:
            raise self.fail(f"{where}.clip_fps", f"must be > 0 (got {fps})")
        if start is None or end is None or fps is None:
            return start, end, fps, None
        if end < start:
            raise self.fail(f"{where}.video_end_frame", f"must be >= video_start_frame {start} (got {end})")
        step = max(1, round(CANONICAL_FPS / fps))
        return start, end, fps, (end - start) // step + 1

    def document(self, data: Any, path: Path) -> AnnotationSet:
        if not isinstance(data, dict):
            raise self.fail("(root)", "expected an object with 'version' and 'videos'")
        version = str(self.get(data, "version", "", (str, int, float)))
        result = AnnotationSet(path=path, version=version)
        for vi, video in enumerate(self.get(data, "videos", "", list)):
            vw = f"videos[{vi}]"
            video_uid = self.get(video, "video_uid", vw, str)
            entry = VideoEntry(video_uid=video_uid, clips=[])
            for ci, clip in enumerate(self.get(video, "clips", vw, list)):
                cw = f"{vw}.clips[{ci}]"
                clip_uid = self.get(clip, "clip_uid", cw, str, optional=True)
                start, end, fps, num_frames = self.clip_length(clip, cw)
                clip_entry = ClipEntry(clip_uid, [], start, end, fps, num_frames)
                for ai, ann in enumerate(self.get(clip, "annotations", cw, list)):
                    aw = f"{cw}.annotations[{ai}]"
                    annotation_uid = self.get(ann, "annotation_uid", aw, str, optional=True)
                    annotation_uid = annotation_uid or f"{clip_uid or video_uid}_{ci}_{ai}"
                    sets = self.get(ann, "query_sets", aw, dict)
                    records = {}
                    for name, qs in sets.items():
                        qw = f'{aw}.query_sets["{name}"]'
                        ids = (video_uid, clip_uid, annotation_uid, str(name))
                        records[str(name)] = self.query_set(qs, qw, ids, num_frames)
                    clip_entry.annotations.append(AnnotationEntry(annotation_uid, records))
                entry.clips.append(clip_entry)
            result.videos.append(entry)
        return result


def _kind_name(kinds: type | tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        list: "a list",
        dict: "an object",
    }
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if set(kinds) == {int, float}:
        return "a number"
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise AnnotationError(f"{path}: annotation file not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"{path.name}: not valid JSON ({exc})") from exc


def load_annotations(path: str | Path) -> AnnotationSet:
    """Parse an official VQ2D file (``vq_train.json``, ``vq_val.json``, ``vq_test_unannotated.json``) or an
    EgoTracks file (``egotracks_train.json``: query sets carry ``lt_track``, often no ``query_frame``).

    Raises:
        AnnotationError: unreadable JSON or any malformed field (the message names the file and the field).
    """
    path = Path(path)
    data = _read_json(path)
    return _Parser(path).document(data, path)


def load_egotracks(path: str | Path) -> list[QueryRecord]:
    """EgoTracks annotations as training records: every valid query set that has an ``lt_track``.

    EgoTracks query sets have no query frame; their ``query_frame`` is set past the last frame of the clip so that
    every frame counts as "before the query" (as VQLoC's EgoTracks loader does).
    """
    path = Path(path)
    data = _read_json(path)
    for video in data.get("videos", []) if isinstance(data, dict) else []:
        for clip in video.get("clips", []) if isinstance(video, dict) else []:
            for ann in clip.get("annotations", []) if isinstance(clip, dict) else []:
                for qs in (ann.get("query_sets") or {}).values() if isinstance(ann, dict) else []:
                    if isinstance(qs, dict) and qs.get("is_valid", True) and "query_frame" not in qs:
                        last = max((b.get("frame_number", 0) for b in qs.get("lt_track") or []), default=0)
                        qs["query_frame"] = last
    records = _Parser(path).document(data, path).valid_records()
    out = []
    for r in records:
        if r.lt_track is None:
            continue
        end = r.clip_num_frames if r.clip_num_frames is not None else r.lt_track[-1][0] + 1
        out.append(replace(r, query_frame=end))
    return out
