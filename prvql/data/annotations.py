"""Ego4D VQ2D annotations (schema v1.0.5) and EgoTracks ``lt_track`` files -> typed per-query records.

The official file nests ``videos -> clips -> annotations -> query_sets``. :func:`load_annotations` keeps that
nesting (the predictions writer must mirror it, invalid query sets included) and flattens it into
:class:`QueryRecord` objects in file order. Boxes are converted from the file's (x, y, width, height) to xyxy
pixels of the ``original_width x original_height`` frame.

Valid query sets are checked strictly; every problem raises :class:`~prvql.errors.AnnotationError` whose message
names the file and the field, e.g.
``vq_val.json: videos[3].clips[0].annotations[1].query_sets["2"].visual_crop.width: must be > 0 (got 0)``.
Query sets flagged ``is_valid: false`` are parsed leniently (they are only ever emitted empty).

Files come from elsewhere and are untrusted: uids and query-set names become file names, so each must be a plain
name (:func:`prvql.paths.plain_name`); numbers must be finite and in range (integers of more than
:data:`MAX_INT_DIGITS` digits, ``NaN``, ``Infinity`` and nesting deeper than Python's recursion limit are refused
with the field named); uids must be unique. Boxes and frames that cannot be right are refused (a box that does not
overlap its frame or reaches beyond it by more than a frame size); those the official data contains are kept and
counted in one warning per file (boxes partly outside the frame, a response track that does not end before its
query frame). docs/DATA.md lists which and why.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prvql.errors import AnnotationError
from prvql.paths import check_input_file, plain_name

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
Track = tuple[tuple[int, Box], ...]

CANONICAL_FPS = 30.0  # frame rate of the Ego4D canonical videos that video_start_frame / video_end_frame count
MAX_INT_DIGITS = 18  # longer integer literals are refused (they fit no frame number or pixel count)
MAX_FRAME = 2**31 - 1  # frame numbers (clip or canonical) above this are refused
MAX_SIDE = 100_000  # original_width / original_height above this are refused


class OutOfRange:
    """An integer literal of more than :data:`MAX_INT_DIGITS` digits, kept unparsed (``int()`` of 5000 digits
    raises, and no field can use it); fields holding one are refused with their name."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"a {len(self.text.lstrip('-'))}-digit number"


def _parse_int(text: str) -> int | OutOfRange:
    return int(text) if len(text.lstrip("-")) <= MAX_INT_DIGITS else OutOfRange(text)


def read_json(path: str | Path, what: str) -> Any:
    """The JSON document in ``path`` (a ``what``, e.g. "annotation file"); huge integers come back as
    :class:`OutOfRange`.

    Raises:
        AnnotationError: missing file, a folder, unreadable bytes, invalid JSON or nesting too deep.
    """
    path = check_input_file(path, what, AnnotationError)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path.name}: not valid JSON (not UTF-8: {exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        return json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path.name}: not valid JSON ({exc})") from None
    except RecursionError:
        raise AnnotationError(f"{path.name}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:
        raise AnnotationError(f"{path.name}: not valid JSON ({exc})") from None


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
        self.boxes_beyond_frame = 0  # kept, warned about once per file
        self.tracks_reaching_query = 0

    def fail(self, where: str, message: str) -> AnnotationError:
        return AnnotationError(f"{self.name}: {where}: {message}")

    def name_field(self, obj: Any, key: str, where: str, optional: bool = False) -> str | None:
        """A uid that becomes part of a file name: a string and a plain name."""
        value = self.get(obj, key, where, str, optional)
        if value is None:
            return None
        return plain_name(value, f"{self.name}: {where}.{key}", AnnotationError)

    def frame_number(self, obj: Any, key: str, where: str, num_frames: int | None) -> int:
        frame = self.get(obj, key, where, int)
        limit = num_frames if num_frames is not None else MAX_FRAME
        if not 0 <= frame < limit:
            raise self.fail(f"{where}.{key}", f"must be in [0, {limit}) (got {frame})")
        return frame

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
        if isinstance(value, OutOfRange):
            raise self.fail(here, f"number out of range ({value!r})")
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
        frame = self.frame_number(obj, "frame_number", where, num_frames)
        x, y = self.number(obj, "x", where), self.number(obj, "y", where)
        w, h = self.number(obj, "width", where), self.number(obj, "height", where)
        for key, value in (("width", w), ("height", h)):
            if value <= 0:
                raise self.fail(f"{where}.{key}", f"must be > 0 (got {value})")
        ow = self.get(obj, "original_width", where, int)
        oh = self.get(obj, "original_height", where, int)
        for key, value in (("original_width", ow), ("original_height", oh)):
            if not 0 < value <= MAX_SIDE:
                raise self.fail(f"{where}.{key}", f"must be in [1, {MAX_SIDE}] (got {value})")
        box = (float(x), float(y), float(x) + float(w), float(y) + float(h))
        self.check_box(box, ow, oh, where)
        return frame, box, oh, ow

    def check_box(self, box: Box, width: int, height: int, where: str) -> None:
        """Refuse a box that misses its frame or reaches more than a frame size beyond it; count one partly outside."""
        x1, y1, x2, y2 = box
        if not (-width <= x1 and x2 <= 2 * width and -height <= y1 and y2 <= 2 * height):
            raise self.fail(where, f"box {_fmt_box(box)} reaches far beyond the {width}x{height} frame")
        if not (x1 < width and y1 < height and x2 > 0 and y2 > 0):
            raise self.fail(where, f"box {_fmt_box(box)} lies outside the {width}x{height} frame")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            self.boxes_beyond_frame += 1

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
        query_frame = self.frame_number(qs, "query_frame", where, num_frames)
        title = self.get(qs, "object_title", where, str, optional=True) or ""
        crop = self.get(qs, "visual_crop", where, dict)
        vc_frame, vc_box, height, width = self.box(crop, f"{where}.visual_crop", num_frames)
        response = None
        if "response_track" in qs:
            response = self.track(qs["response_track"], f"{where}.response_track", num_frames, contiguous=True)
            if response[-1][0] >= query_frame:
                self.tracks_reaching_query += 1
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
        for key, value in (("video_start_frame", start), ("video_end_frame", end)):
            if value is not None and not 0 <= value <= MAX_FRAME:
                raise self.fail(f"{where}.{key}", f"must be in [0, {MAX_FRAME}] (got {value})")
        fps = self.number(clip, "clip_fps", where, optional=True)
        if fps is not None and not 0 < fps <= CANONICAL_FPS * 10:
            raise self.fail(f"{where}.clip_fps", f"must be in (0, {CANONICAL_FPS * 10:g}] (got {fps})")
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
        seen: dict[str, str] = {}  # clip uid / query key -> where it was first seen

        def unique(kind: str, value: str, where: str) -> None:
            first = seen.setdefault(f"{kind}:{value}", where)
            if first != where:
                raise self.fail(where, f"duplicate {kind} {value!r} (also at {first})")

        for vi, video in enumerate(self.get(data, "videos", "", list)):
            vw = f"videos[{vi}]"
            video_uid = self.name_field(video, "video_uid", vw)
            entry = VideoEntry(video_uid=video_uid, clips=[])
            for ci, clip in enumerate(self.get(video, "clips", vw, list)):
                cw = f"{vw}.clips[{ci}]"
                clip_uid = self.name_field(clip, "clip_uid", cw, optional=True)
                if clip_uid is not None:
                    unique("clip_uid", clip_uid, f"{cw}.clip_uid")
                start, end, fps, num_frames = self.clip_length(clip, cw)
                clip_entry = ClipEntry(clip_uid, [], start, end, fps, num_frames)
                for ai, ann in enumerate(self.get(clip, "annotations", cw, list)):
                    aw = f"{cw}.annotations[{ai}]"
                    annotation_uid = self.name_field(ann, "annotation_uid", aw, optional=True)
                    annotation_uid = annotation_uid or f"{clip_uid or video_uid}_{ci}_{ai}"
                    unique("annotation_uid", annotation_uid, f"{aw}.annotation_uid")
                    sets = self.get(ann, "query_sets", aw, dict)
                    records = {}
                    for name, qs in sets.items():
                        qw = f'{aw}.query_sets["{name}"]'
                        plain_name(name, f"{self.name}: {qw}", AnnotationError)
                        ids = (video_uid, clip_uid, annotation_uid, str(name))
                        records[str(name)] = self.query_set(qs, qw, ids, num_frames)
                        key = records[str(name)].key  # names the query's cache file: <key>.npz
                        plain_name(key, f"{self.name}: {qw} (query key annotation_uid_name)", AnnotationError)
                        unique("query key", key, qw)
                    clip_entry.annotations.append(AnnotationEntry(annotation_uid, records))
                entry.clips.append(clip_entry)
            result.videos.append(entry)
        self.warn_kept()
        return result

    def warn_kept(self) -> None:
        """One warning for the implausible but kept entries (see docs/DATA.md)."""
        kept = []
        if self.boxes_beyond_frame:
            kept.append(f"{self.boxes_beyond_frame} boxes extend beyond their frame")
        if self.tracks_reaching_query:
            kept.append(f"{self.tracks_reaching_query} response tracks do not end before their query frame")
        if kept:
            log.warning("%s: %s (kept as given; see docs/DATA.md)", self.name, "; ".join(kept))


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


def _fmt_box(box: Box) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in box) + ")"


def load_annotations(path: str | Path) -> AnnotationSet:
    """Parse an official VQ2D file (``vq_train.json``, ``vq_val.json``, ``vq_test_unannotated.json``) or an
    EgoTracks file (``egotracks_train.json``: query sets carry ``lt_track``, often no ``query_frame``).

    Raises:
        AnnotationError: unreadable JSON or any malformed field (the message names the file and the field).
    """
    path = Path(path)
    data = read_json(path, "annotation file")
    return _Parser(path).document(data, path)


def load_synthetic_occurrences(path: str | Path) -> dict[str, frozenset[int]]:
    """Query key -> every clip frame where the target is visible, for the valid query sets of a ``prvql synth``
    annotation file that list them (``synthetic_occurrences``: not an official field). The labels of per-frame
    measures (experiments/demo_model/demo_heldout.py) and of ``experiments/demo_model/fit_verification.py``.

    Raises:
        AnnotationError: unreadable JSON, or an occurrence list that is not a list of frame numbers >= 0.
    """
    path = Path(path)
    records = {(r.annotation_uid, r.query_set): r for r in load_annotations(path).valid_records()}
    occurrences = {}
    for video in read_json(path, "annotation file").get("videos", []):
        for clip in video.get("clips", []):
            for ann in clip.get("annotations", []):
                for name, qs in (ann.get("query_sets") or {}).items():
                    record = records.get((ann.get("annotation_uid"), name))
                    if record is None or "synthetic_occurrences" not in qs:
                        continue
                    frames = qs["synthetic_occurrences"]
                    if not isinstance(frames, list) or not all(
                        isinstance(j, int) and not isinstance(j, bool) and 0 <= j < MAX_FRAME for j in frames
                    ):
                        raise AnnotationError(
                            f"{path.name}: {record.key}.synthetic_occurrences: expected a list of frame numbers"
                        )
                    occurrences[record.key] = frozenset(frames)
    return occurrences


def load_egotracks(path: str | Path) -> list[QueryRecord]:
    """EgoTracks annotations as training records: every valid query set that has an ``lt_track``.

    EgoTracks query sets have no query frame; their ``query_frame`` is set past the last frame of the clip so that
    every frame counts as "before the query" (as VQLoC's EgoTracks loader does).
    """
    path = Path(path)
    data = read_json(path, "annotation file")
    for video in data.get("videos", []) if isinstance(data, dict) else []:
        for clip in video.get("clips", []) if isinstance(video, dict) else []:
            for ann in clip.get("annotations", []) if isinstance(clip, dict) else []:
                for qs in (ann.get("query_sets") or {}).values() if isinstance(ann, dict) else []:
                    if isinstance(qs, dict) and qs.get("is_valid", True) and "query_frame" not in qs:
                        track = qs.get("lt_track") if isinstance(qs.get("lt_track"), list) else []
                        numbers = [b.get("frame_number") for b in track if isinstance(b, dict)]
                        last = max((n for n in numbers if isinstance(n, int) and not isinstance(n, bool)), default=0)
                        qs["query_frame"] = last
    records = _Parser(path).document(data, path).valid_records()
    out = []
    for r in records:
        if r.lt_track is None:
            continue
        end = r.clip_num_frames if r.clip_num_frames is not None else r.lt_track[-1][0] + 1
        out.append(replace(r, query_frame=end))
    return out
