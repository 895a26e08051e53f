"""The challenge predictions file (writer, validating reader), evaluation against annotations, `prvql evaluate`."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from prvql.cli import main
from prvql.data.annotations import load_annotations
from prvql.errors import AnnotationError
from prvql.infer.predictions import CHALLENGE, build_predictions, load_predictions, write_predictions
from prvql.metrics import ResponseTrack
from prvql.metrics.evaluation import evaluate_predictions


def _box(fno: int, x: float, y: float, w: float, h: float) -> dict:
    return {"frame_number": fno, "x": x, "y": y, "width": w, "height": h, "original_width": 640, "original_height": 480}


def _query(first: int, last: int, w: float = 20, valid: bool = True) -> dict:
    return {
        "is_valid": valid,
        "query_frame": 40,
        "object_title": "mug",
        "visual_crop": _box(45, 5, 5, 30, 30),
        "response_track": [_box(f, 10, 10, w, w) for f in range(first, last + 1)],
    }


def _annotations() -> dict:
    """2 videos; video 0 has 2 clips. Query sets: a1 {1, 2 (invalid)}, a2 {1}, a3 {1, 3 (large object)}."""
    clip = {"clip_fps": 5.0, "video_start_frame": 0, "video_end_frame": 6 * 59}
    return {
        "version": "1.0.5",
        "videos": [
            {
                "video_uid": "v0",
                "clips": [
                    {
                        **clip,
                        "clip_uid": "c0",
                        "annotations": [
                            {"annotation_uid": "a1", "query_sets": {"1": _query(2, 5), "2": _query(0, 1, valid=False)}},
                            {"annotation_uid": "a2", "query_sets": {"1": _query(10, 19)}},
                        ],
                    },
                    {**clip, "clip_uid": "c1", "annotations": []},
                ],
            },
            {
                "video_uid": "v1",
                "clips": [
                    {
                        **clip,
                        "clip_uid": "c2",
                        "annotations": [
                            {"annotation_uid": "a3", "query_sets": {"1": _query(0, 9), "3": _query(20, 29, w=300)}},
                        ],
                    },
                ],
            },
        ],
    }


def _tracks() -> dict[str, ResponseTrack]:
    """a1_1 exact (4 frames); a2_1 frames 10-15 of 10-19 exact; a3_1 missing; a3_3 exact, unsorted input."""
    box = [10.0, 10.0, 30.0, 30.0]
    big = [10.0, 10.0, 310.0, 310.0]
    return {
        "a1_1": ResponseTrack(np.arange(2, 6), np.tile(box, (4, 1)), 1.0),
        "a2_1": ResponseTrack(np.arange(10, 16), np.tile(box, (6, 1)), 1.0),
        "a3_3": ResponseTrack(np.arange(29, 19, -1), np.tile(big, (10, 1)), 1.0),
        "a1_2": ResponseTrack(np.arange(0, 2), np.tile(box, (2, 1)), 1.0),  # invalid query set: never written
    }


@pytest.fixture
def files(tmp_path):
    ann_path = tmp_path / "vq_val.json"
    ann_path.write_text(json.dumps(_annotations()))
    annotations = load_annotations(ann_path)
    pred_path = tmp_path / "pred.json"
    write_predictions(pred_path, annotations, _tracks())
    return annotations, ann_path, pred_path


def test_written_file_mirrors_the_annotations(files):
    annotations, _, pred_path = files
    data = json.loads(pred_path.read_text())
    assert data["version"] == "1.0.5" and data["challenge"] == CHALLENGE
    videos = data["results"]["videos"]
    assert [v["video_uid"] for v in videos] == ["v0", "v1"]
    assert [c["clip_uid"] for c in videos[0]["clips"]] == ["c0", "c1"]
    assert videos[0]["clips"][1]["predictions"] == []
    a1 = videos[0]["clips"][0]["predictions"][0]
    assert a1["annotation_uid"] == "a1" and list(a1["query_sets"]) == ["1", "2"]
    assert a1["query_sets"]["2"] == {"bboxes": [], "score": 0.0}  # invalid: present and empty
    assert a1["query_sets"]["1"]["bboxes"][0] == {"fno": 2, "x1": 10.0, "y1": 10.0, "x2": 30.0, "y2": 30.0}
    a3 = videos[1]["clips"][0]["predictions"][0]["query_sets"]
    assert a3["1"] == {"bboxes": [], "score": 0.0}  # valid but not predicted
    assert [b["fno"] for b in a3["3"]["bboxes"]] == list(range(20, 30))
    assert build_predictions(annotations, _tracks()) == data


def test_round_trip(files):
    annotations, _, pred_path = files
    tracks = load_predictions(pred_path, annotations)
    assert sorted(tracks) == ["a1_1", "a2_1", "a3_1", "a3_3"]  # every valid query set, none of the invalid
    expected = _tracks()
    for key in ("a1_1", "a2_1", "a3_3"):
        np.testing.assert_array_equal(tracks[key].frames, expected[key].frames)
        np.testing.assert_array_equal(tracks[key].boxes, expected[key].boxes)
        assert tracks[key].score == 1.0
    assert len(tracks["a3_1"]) == 0 and tracks["a3_1"].score == 0.0


def test_floats_are_rounded_to_hundredths(tmp_path, files):
    annotations, _, _ = files
    path = tmp_path / "p.json"
    write_predictions(path, annotations, {"a1_1": ResponseTrack([3], [[1.23456, 2.0, 3.999, 4.0]], 0.5)})
    box = load_predictions(path, annotations)["a1_1"].boxes[0]
    np.testing.assert_allclose(box, [1.23, 2.0, 4.0, 4.0])


P = "results.videos[0].clips[0].predictions[0]"
Q = P + '.query_sets["1"]'


def _set(path, value):
    def mutate(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _delete(path):
    def mutate(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


VIDEO0 = ["results", "videos", 0]
QSET = [*VIDEO0, "clips", 0, "predictions", 0, "query_sets", "1"]
BBOXES = [*QSET, "bboxes"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (_set(["version"], "1.0"), r"pred\.json: version: '1\.0' differs from the annotations' '1\.0\.5'"),
        (_set(["challenge"], "ego4d_nlq"), r"pred\.json: challenge: expected 'ego4d_vq2d_challenge'"),
        (_delete(["results"]), r"pred\.json: results: missing"),
        (_set(["results", "videos"], {}), r"results\.videos: expected a list"),
        (lambda d: d["results"]["videos"].pop(), r"results\.videos: 1 videos, the annotations have 2"),
        (_set([*VIDEO0, "video_uid"], "v9"), r"results\.videos\[0\]\.video_uid: expected 'v0' as in the annotations"),
        (_set(["results", "videos", 1], []), r"results\.videos\[1\]: expected an object, got \[\]"),
        (_set([*VIDEO0, "clips", 1], "c1"), r"results\.videos\[0\]\.clips\[1\]: expected an object, got 'c1'"),
        (_set([*VIDEO0, "clips", 0, "predictions", 1], 3), r"clips\[0\]\.predictions\[1\]: expected an object, got 3"),
        (_set([*VIDEO0, "clips", 1, "clip_uid"], None), r"results\.videos\[0\]\.clips\[1\]\.clip_uid: expected 'c1'"),
        (
            lambda d: d["results"]["videos"][0]["clips"][0]["predictions"].reverse(),
            r"predictions\[0\]\.annotation_uid: expected 'a1'",
        ),
        (
            lambda d: d["results"]["videos"][0]["clips"][0]["predictions"].pop(),
            r"clips\[0\]\.predictions: 1 predictions, the annotations have 2",
        ),
        (
            _delete(QSET),
            P.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")
            + r'\.query_sets\["1"\]: missing \(the query set is valid\)',
        ),
        (_delete([*VIDEO0, "clips", 0, "predictions", 0, "query_sets", "2"]), None),  # invalid sets may be absent
        (
            _set([*VIDEO0, "clips", 0, "predictions", 0, "query_sets", "7"], {"bboxes": [], "score": 0.0}),
            r'query_sets\["7"\]: not a query set of this annotation',
        ),
        (_set(BBOXES, "none"), r'query_sets\["1"\]\.bboxes: expected a list'),
        (_delete([*QSET, "score"]), r'query_sets\["1"\]\.score: missing'),
        (_set([*QSET, "score"], "high"), r'query_sets\["1"\]\.score: expected a finite number'),
        (_set([*BBOXES, 1, "fno"], -1), r"bboxes\[1\]\.fno: expected a frame number in \[0, "),
        (_set([*BBOXES, 1, "fno"], 3.0), r"bboxes\[1\]\.fno: expected a frame number"),
        (_delete([*BBOXES, 0, "y2"]), r"bboxes\[0\]\.y2: missing"),
        (_set([*BBOXES, 0, "x1"], float("nan")), r"bboxes\[0\]\.x1: expected a finite number"),
        (_set([*BBOXES, 2, "x2"], 5.0), r"bboxes\[2\]: needs x2 >= x1 and y2 >= y1"),
        (_set([*BBOXES, 3, "fno"], 7), r'\.query_sets\["1"\]\.bboxes\[3\]: frames not contiguous \(fno 7 after 4\)'),
        (_set([*BBOXES, 3, "fno"], 4), r"bboxes\[3\]: frame 4 appears twice"),
        (
            lambda d: d["results"]["videos"][0]["clips"][0]["predictions"][0]["query_sets"]["1"]["bboxes"].reverse(),
            None,
        ),  # any order is fine as long as the frames are contiguous
    ],
)
def test_validator_names_the_offending_field(files, tmp_path, mutate, message):
    annotations = files[0]
    data = build_predictions(annotations, _tracks())
    mutate(data)
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(data))
    if message is None:
        assert "a1_1" in load_predictions(path, annotations)
        return
    with pytest.raises(AnnotationError, match=message):
        load_predictions(path, annotations)


def test_unreadable_predictions(files, tmp_path):
    annotations = files[0]
    with pytest.raises(AnnotationError, match="not found"):
        load_predictions(tmp_path / "missing.json", annotations)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(AnnotationError, match=r"bad\.json: not valid JSON"):
        load_predictions(tmp_path / "bad.json", annotations)


def test_evaluate_predictions(files):
    annotations, _, pred_path = files
    result = evaluate_predictions(annotations, load_predictions(pred_path, annotations))
    m = result.overall
    # 4 valid queries in file order: a1_1 (tIoU 1), a2_1 (0.6), a3_1 (empty: 0), a3_3 (1, large object)
    # the empty track has score 0, the others tie at 1 and rank in reverse order: a3_3, a2_1, a1_1, then a3_1
    # at 0.25 and 0.5: TP 1, 1, 1, 0 -> precision 1 up to recall 3/4 -> AP 3/4
    # at 0.75 and 0.95: TP 1, 0, 1, 0 -> precision 1, 1/2, 2/3, 1/2 at recall 1/4, 1/4, 1/2, 1/2
    #   -> AP = 1/4 * 1 + 1/4 * 2/3 = 5/12
    assert m.num_queries == 4
    assert m.tap25 == pytest.approx(3 / 4)
    assert m.tap == pytest.approx((3 / 4 + 3 / 4 + 5 / 12 + 5 / 12) / 4)
    assert m.stap25 == pytest.approx(3 / 4)
    assert m.success == pytest.approx(75.0)
    assert m.recovery == pytest.approx(100 * (4 + 6 + 0 + 10) / (4 + 10 + 10 + 10))
    assert result.scales["small"].num_queries == 3 and result.scales["large"].num_queries == 1
    assert result.scales["medium"] is None
    assert result.scales["large"].tap == 1.0


def test_evaluate_cli_json_and_table(files, capsys):
    _, ann_path, pred_path = files
    assert main(["evaluate", "--annotations", str(ann_path), "--predictions", str(pred_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"tAP", "tAP25", "stAP", "stAP25", "success", "recovery", "num_queries", "scales"}
    assert out["tAP25"] == pytest.approx(3 / 4) and out["success"] == pytest.approx(75.0)
    assert out["scales"]["small"]["num_queries"] == 3 and out["scales"]["medium"] == {"num_queries": 0}
    assert main(["evaluate", "--annotations", str(ann_path), "--predictions", str(pred_path)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[1].startswith("all") and "0.7500" in table


def test_evaluate_cli_bad_input_exits_2(files, tmp_path, capsys):
    _, ann_path, pred_path = files
    data = json.loads(pred_path.read_text())
    data["results"]["videos"][1]["clips"][0]["predictions"][0]["query_sets"]["3"]["bboxes"][4]["fno"] = 40
    bad = tmp_path / "bad_pred.json"
    bad.write_text(json.dumps(data))
    assert main(["evaluate", "--annotations", str(ann_path), "--predictions", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('prvql: error: bad_pred.json: results.videos[1].clips[0].predictions[0].query_sets["3"]')
    assert len(err.splitlines()) == 1
    unannotated = copy.deepcopy(_annotations())
    for video in unannotated["videos"]:
        for clip in video["clips"]:
            for ann in clip["annotations"]:
                for qs in ann["query_sets"].values():
                    del qs["response_track"]
    test_path = tmp_path / "vq_test_unannotated.json"
    test_path.write_text(json.dumps(unannotated))
    assert main(["evaluate", "--annotations", str(test_path), "--predictions", str(pred_path)]) == 2
    assert "no valid query set with a response_track" in capsys.readouterr().err
