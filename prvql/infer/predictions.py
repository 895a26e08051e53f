"""The Ego4D VQ2D challenge predictions file: writer and validating reader.

Format (what the official ``perform_vq_inference.format_predictions`` writes and ``evaluate_vq.py`` /
``validate_challenge_predictions.py`` accept)::

    {"version": <the annotation file's version>, "challenge": "ego4d_vq2d_challenge",
     "results": {"videos": [{"video_uid": ..., "clips": [{"clip_uid": ..., "predictions": [
         {"annotation_uid": ..., "query_sets": {"1": {"bboxes": [{"fno": 12, "x1": .., "y1": .., "x2": .., "y2": ..}],
                                                      "score": 1.0}, ...}}]}]}]}}

Videos, clips and annotations appear in the order and numbers of the annotation file (the official code zips the
two files together); every query set of the annotation file is present, invalid or unpredicted ones as
``{"bboxes": [], "score": 0.0}``. ``fno`` is the clip frame number; boxes are xyxy pixels of the original frame.
Upstream writes the coordinates as ints (truncating); the validator and the metrics accept numbers, so we keep
floats rounded to 0.01 px.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from prvql.atomic import atomic_write_json
from prvql.data.annotations import MAX_FRAME, AnnotationSet, read_json
from prvql.errors import AnnotationError
from prvql.metrics.structures import ResponseTrack

log = logging.getLogger(__name__)

CHALLENGE = "ego4d_vq2d_challenge"
BOX_KEYS = ("x1", "y1", "x2", "y2")
MAX_COORDINATE = 1e6  # |x|, |y| of a predicted box above this many pixels are refused (areas would overflow)
DECIMALS = 2


def track_to_json(track: ResponseTrack) -> dict[str, Any]:
    """``{"bboxes": [{"fno", "x1", "y1", "x2", "y2"}, ...], "score": float}``."""
    bboxes = [
        {"fno": int(fno), **{k: round(float(v), DECIMALS) for k, v in zip(BOX_KEYS, box, strict=True)}}
        for fno, box in zip(track.frames, track.boxes, strict=True)
    ]
    return {"bboxes": bboxes, "score": float(track.score)}


def build_predictions(annotations: AnnotationSet, tracks: Mapping[str, ResponseTrack]) -> dict[str, Any]:
    """The challenge JSON object for ``tracks`` (``QueryRecord.key -> ResponseTrack``), shaped as ``annotations``.

    Valid query sets missing from ``tracks`` are written empty (and counted in a warning); tracks of invalid query
    sets are ignored.
    """
    videos = []
    written = missing = 0
    for video in annotations.videos:
        clips = []
        for clip in video.clips:
            preds = []
            for ann in clip.annotations:
                sets = {}
                for name, record in ann.query_sets.items():
                    if record.is_valid and record.key in tracks:
                        sets[name] = track_to_json(tracks[record.key])
                        written += 1
                    else:
                        sets[name] = track_to_json(ResponseTrack.empty())
                        missing += record.is_valid
                preds.append({"annotation_uid": ann.annotation_uid, "query_sets": sets})
            clips.append({"clip_uid": clip.clip_uid, "predictions": preds})
        videos.append({"video_uid": video.video_uid, "clips": clips})
    if missing:
        log.warning("%d valid query sets have no prediction and are written empty", missing)
    log.info("predictions for %d query sets", written)
    return {"version": annotations.version, "challenge": CHALLENGE, "results": {"videos": videos}}


def write_predictions(path: str | Path, annotations: AnnotationSet, tracks: Mapping[str, ResponseTrack]) -> None:
    """Write :func:`build_predictions` atomically to ``path``."""
    atomic_write_json(path, build_predictions(annotations, tracks))


class _Checker:
    """Raises AnnotationError naming the predictions file and the offending field."""

    def __init__(self, path: Path) -> None:
        self.name = path.name

    def fail(self, where: str, message: str) -> AnnotationError:
        return AnnotationError(f"{self.name}: {where}: {message}")

    def object(self, value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {value!r:.60}")
        return value

    def field(self, obj: dict, key: str, where: str, kind: type) -> Any:
        here = f"{where}.{key}" if where else key
        if key not in obj:
            raise self.fail(here, "missing")
        if not isinstance(obj[key], kind):
            raise self.fail(here, f"expected {'an object' if kind is dict else 'a list'}, got {obj[key]!r:.60}")
        return obj[key]

    def same(self, where: str, got: Any, expected: Any) -> None:
        if got != expected:
            raise self.fail(where, f"expected {expected!r} as in the annotations, got {got!r}")

    def count(self, where: str, got: list, expected: int, what: str) -> None:
        if len(got) != expected:
            raise self.fail(where, f"{len(got)} {what}, the annotations have {expected}")

    def number(self, obj: dict, key: str, where: str) -> float:
        value = obj.get(key)
        if key not in obj:
            raise self.fail(f"{where}.{key}", "missing")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(f"{where}.{key}", f"expected a finite number, got {value!r}")
        return float(value)

    def track(self, qset: Any, where: str) -> ResponseTrack:
        bboxes = self.field(self.object(qset, where), "bboxes", where, list)
        score = self.number(qset, "score", where)
        frames, boxes = [], []
        for i, bbox in enumerate(bboxes):
            here = f"{where}.bboxes[{i}]"
            fno = self.object(bbox, here).get("fno")
            if isinstance(fno, bool) or not isinstance(fno, int) or not 0 <= fno <= MAX_FRAME:
                raise self.fail(f"{here}.fno", f"expected a frame number in [0, {MAX_FRAME}], got {fno!r}")
            x1, y1, x2, y2 = (self.number(bbox, k, here) for k in BOX_KEYS)
            for key, value in zip(BOX_KEYS, (x1, y1, x2, y2), strict=True):
                if abs(value) > MAX_COORDINATE:
                    raise self.fail(f"{here}.{key}", f"must be within +-{MAX_COORDINATE:g} pixels (got {value:g})")
            if x2 < x1 or y2 < y1:
                raise self.fail(here, f"needs x2 >= x1 and y2 >= y1 (got {x1}, {y1}, {x2}, {y2})")
            frames.append(fno)
            boxes.append((x1, y1, x2, y2))
        order = sorted(range(len(frames)), key=frames.__getitem__)
        for prev, cur in zip(order, order[1:], strict=False):
            if frames[cur] == frames[prev]:
                raise self.fail(f"{where}.bboxes[{cur}]", f"frame {frames[cur]} appears twice")
            if frames[cur] != frames[prev] + 1:
                raise self.fail(
                    f"{where}.bboxes[{cur}]", f"frames not contiguous (fno {frames[cur]} after {frames[prev]})"
                )
        return ResponseTrack(np.asarray(frames, dtype=np.int64), np.asarray(boxes, dtype=np.float64), score)


def load_predictions(path: str | Path, annotations: AnnotationSet) -> dict[str, ResponseTrack]:
    """Read and validate a challenge predictions file against the annotations it answers.

    Checked as the official validator and evaluator do, plus the types: version and challenge name; the same
    videos, clips and annotations in the same order and numbers (uids equal; ``annotation_uid`` when present);
    every valid query set present and no unknown one; each query set an object with a ``bboxes`` list and a finite
    numeric ``score``; each box ``fno`` an int >= 0, numeric x1 <= x2 and y1 <= y2; frames contiguous (any order).

    Returns:
        ``QueryRecord.key -> ResponseTrack`` for every valid query set.

    Raises:
        AnnotationError: naming the file and the first offending entry, e.g.
            ``pred.json: results.videos[2].clips[0].predictions[1].query_sets["3"].bboxes[4]: frames not
            contiguous (fno 17 after 15)``.
    """
    path = Path(path)
    check = _Checker(path)
    data = read_json(path, "predictions file")
    if not isinstance(data, dict):
        raise check.fail("(root)", "expected an object with 'version', 'challenge' and 'results'")
    for key in ("version", "challenge"):
        if key not in data:
            raise check.fail(key, "missing")
    if str(data["version"]) != annotations.version:
        raise check.fail("version", f"{data['version']!r} differs from the annotations' {annotations.version!r}")
    check.same("challenge", data["challenge"], CHALLENGE)
    videos = check.field(check.field(data, "results", "", dict), "videos", "results", list)
    check.count("results.videos", videos, len(annotations.videos), "videos")
    tracks: dict[str, ResponseTrack] = {}
    for vi, (video_ann, video) in enumerate(zip(annotations.videos, videos, strict=True)):
        vw = f"results.videos[{vi}]"
        check.same(f"{vw}.video_uid", check.object(video, vw).get("video_uid"), video_ann.video_uid)
        clips = check.field(video, "clips", vw, list)
        check.count(f"{vw}.clips", clips, len(video_ann.clips), "clips")
        for ci, (clip_ann, clip) in enumerate(zip(video_ann.clips, clips, strict=True)):
            cw = f"{vw}.clips[{ci}]"
            if "clip_uid" not in check.object(clip, cw):
                raise check.fail(f"{cw}.clip_uid", "missing")
            check.same(f"{cw}.clip_uid", clip["clip_uid"], clip_ann.clip_uid)
            preds = check.field(clip, "predictions", cw, list)
            check.count(f"{cw}.predictions", preds, len(clip_ann.annotations), "predictions")
            for ai, (ann, pred) in enumerate(zip(clip_ann.annotations, preds, strict=True)):
                aw = f"{cw}.predictions[{ai}]"
                if "annotation_uid" in check.object(pred, aw):
                    check.same(f"{aw}.annotation_uid", pred["annotation_uid"], ann.annotation_uid)
                sets = check.field(pred, "query_sets", aw, dict)
                for name in sets:
                    if name not in ann.query_sets:
                        raise check.fail(f'{aw}.query_sets["{name}"]', "not a query set of this annotation")
                for name, record in ann.query_sets.items():
                    qw = f'{aw}.query_sets["{name}"]'
                    if name not in sets:
                        if record.is_valid:
                            raise check.fail(qw, "missing (the query set is valid)")
                        continue
                    track = check.track(sets[name], qw)
                    if record.is_valid:
                        tracks[record.key] = track
    return tracks
