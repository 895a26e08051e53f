"""Parsing the official VQ2D schema (v1.0.5) and EgoTracks lt_track files into typed records."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from prvql.data.annotations import load_annotations, load_egotracks
from prvql.errors import AnnotationError


def box(frame: int, x: float, y: float, w: float, h: float) -> dict:
    return {"frame_number": frame, "x": x, "y": y, "width": w, "height": h, "rotation": 0.0,
            "original_width": 640, "original_height": 480, "video_frame_number": 6 * frame}  # fmt: skip


def official() -> dict:
    """Two videos: a train-style clip (valid, invalid and unsorted-track sets) and a test-style null clip."""
    valid = {
        "is_valid": True,
        "query_frame": 40,
        "object_title": "mug",
        "visual_crop": box(45, 10, 20, 30, 40),
        "response_track": [box(12, 5, 5, 10, 10), box(10, 1, 2, 3, 4), box(11, 2, 2, 3, 4)],
    }
    invalid = {"is_valid": False, "errors": ["bad"], "visual_crop": {"frame_number": 3}}
    second = copy.deepcopy(valid) | {"object_title": "key", "query_frame": 20}
    clip = {
        "clip_uid": "clip-a",
        "video_start_sec": 1.0,
        "video_end_sec": 11.0,
        "video_start_frame": 30,
        "video_end_frame": 330,  # (330 - 30) / 6 + 1 = 51 clip frames
        "clip_fps": 5.0,
        "annotations": [
            {"annotation_uid": "ann-1", "query_sets": {"1": valid, "2": second, "3": invalid}},
        ],
    }
    test_clip = {
        "clip_uid": None,
        "clip_fps": 5.0,
        "annotations": [
            {
                "annotation_uid": "ann-2",
                "query_sets": {"1": {"is_valid": True, "query_frame": 7, "visual_crop": box(3, 0, 0, 5, 5)}},
            }
        ],
    }
    return {
        "version": "1.0.5",
        "videos": [
            {"video_uid": "video-1", "split": "train", "clips": [clip]},
            {"video_uid": "video-2", "split": "test", "clips": [test_clip]},
        ],
    }


def write(tmp_path: Path, data: object, name: str = "vq_val.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_parses_records_in_file_order(tmp_path: Path) -> None:
    ann = load_annotations(write(tmp_path, official()))
    assert ann.version == "1.0.5"
    records = ann.records()
    assert [r.key for r in records] == ["ann-1_1", "ann-1_2", "ann-1_3", "ann-2_1"]
    first = records[0]
    assert first.video_uid == "video-1" and first.clip_uid == "clip-a" and first.object_title == "mug"
    assert first.clip_num_frames == 51
    assert (first.frame_height, first.frame_width) == (480, 640)
    assert first.visual_crop_frame == 45 and first.visual_crop_box == (10.0, 20.0, 40.0, 60.0)
    assert [f for f, _ in first.response_track] == [10, 11, 12]  # sorted
    assert first.response_track[0][1] == (1.0, 2.0, 4.0, 6.0)
    assert first.response_frames == (10, 12)


def test_invalid_and_test_split_sets_stay_visible_but_not_trainable(tmp_path: Path) -> None:
    ann = load_annotations(write(tmp_path, official()))
    invalid = ann.records()[2]
    assert not invalid.is_valid and invalid.visual_crop_frame == 3
    test_record = ann.records()[3]
    assert test_record.clip_uid is None and test_record.response_track is None and test_record.clip_num_frames is None
    assert [r.key for r in ann.valid_records()] == ["ann-1_1", "ann-1_2"]
    # the nesting the prediction writer mirrors
    assert [c.clip_uid for _, c in ann.clips()] == ["clip-a", None]
    assert list(ann.videos[0].clips[0].annotations[0].query_sets) == ["1", "2", "3"]


QS = 'videos[0].clips[0].annotations[0].query_sets["1"]'


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d, q: q["visual_crop"].update(width=0), f"vq_val.json: {QS}.visual_crop.width: must be > 0 (got 0)"),
        (lambda d, q: q["response_track"].pop(2), f"vq_val.json: {QS}.response_track: must cover contiguous frames"),
        (lambda d, q: q.update(query_frame=51), f"vq_val.json: {QS}.query_frame: must be in [0, 51) (got 51)"),
        (lambda d, q: q.pop("visual_crop"), f"vq_val.json: {QS}.visual_crop: missing"),
        (lambda d, q: q["response_track"][0].pop("x"), f"vq_val.json: {QS}.response_track[0].x: missing"),
        (lambda d, q: q["visual_crop"].update(height="7"), f"vq_val.json: {QS}.visual_crop.height: expected a number"),
        (lambda d, q: q["visual_crop"].update(frame_number=60), f"{QS}.visual_crop.frame_number: must be in [0, 51)"),
        (lambda d, q: d["videos"][1].pop("video_uid"), "vq_val.json: videos[1].video_uid: missing"),
        (lambda d, q: d.pop("videos"), "vq_val.json: videos: missing"),
    ],
)
def test_malformed_input_names_the_field(tmp_path: Path, edit, message: str) -> None:
    data = official()
    edit(data, data["videos"][0]["clips"][0]["annotations"][0]["query_sets"]["1"])
    with pytest.raises(AnnotationError) as info:
        load_annotations(write(tmp_path, data))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="not found"):
        load_annotations(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(AnnotationError, match="broken.json: not valid JSON"):
        load_annotations(tmp_path / "broken.json")


def test_egotracks_lt_track(tmp_path: Path) -> None:
    data = official()
    qs = data["videos"][0]["clips"][0]["annotations"][0]["query_sets"]["1"]
    qs.pop("query_frame")
    qs.pop("response_track")
    qs["lt_track"] = [box(30, 1, 1, 5, 5), box(4, 1, 1, 5, 5), box(5, 1, 1, 5, 5)]  # gaps are allowed
    data["videos"][0]["clips"][0]["annotations"][0]["query_sets"] = {"1": qs}
    records = load_egotracks(write(tmp_path, data, "egotracks_train.json"))
    assert len(records) == 1
    record = records[0]
    assert [f for f, _ in record.lt_track] == [4, 5, 30]
    assert record.query_frame == 51  # every frame of the clip counts as "before the query"


def test_implausible_but_official_entries_are_kept_with_one_warning(tmp_path: Path, caplog) -> None:
    """Boxes partly outside their frame and response tracks reaching the query frame are kept and counted once."""
    data = official()
    qs = data["videos"][0]["clips"][0]["annotations"][0]["query_sets"]["1"]
    qs["visual_crop"]["x"] = -5.0
    qs["query_frame"] = qs["response_track"][-1]["frame_number"]
    with caplog.at_level("WARNING"):
        records = load_annotations(write(tmp_path, data)).records()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "1 boxes extend beyond their frame" in warnings[0] and "1 response tracks" in warnings[0]
    assert records[0].visual_crop_box[0] == -5.0
