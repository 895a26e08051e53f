"""experiments/demo_model/tune_postprocess.py: the grid search over cached score curves picks the setting the
metrics favour (and compare_grids.py, crop_sightings.py on its outputs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.demo_model import compare_grids, tune_postprocess
from prvql.infer.score_cache import FrameScores, ScoreCache

LAB = Path(__file__).resolve().parents[1]  # experiments/demo_model
SCRIPT = LAB / "tune_postprocess.py"

BOX = [10.0, 10.0, 50.0, 50.0]


def _query(first: int, last: int) -> dict:
    def box(fno: int) -> dict:
        return {
            "frame_number": fno,
            "x": 10,
            "y": 10,
            "width": 40,
            "height": 40,
            "original_width": 640,
            "original_height": 480,
        }

    return {
        "is_valid": True,
        "query_frame": 40,
        "object_title": "mug",
        "visual_crop": box(45),
        "response_track": [box(f) for f in range(first, last + 1)],
    }


def _files(tmp_path: Path, curves: dict[str, np.ndarray] | None = None) -> tuple[Path, Path]:
    """Two queries whose true sightings are frames 10-14 and 20-24. By default each curve also has a LATER
    one-frame spike, so only a median filter of 3 or more (which removes the spike) finds the sightings."""
    clip = {"clip_uid": "c0", "clip_fps": 5.0, "video_start_frame": 0, "video_end_frame": 300}
    clip["annotations"] = [{"annotation_uid": "a", "query_sets": {"1": _query(10, 14), "2": _query(20, 24)}}]
    annotations = tmp_path / "vq_val.json"
    annotations.write_text(json.dumps({"version": "1.0.5", "videos": [{"video_uid": "v", "clips": [clip]}]}))
    cache = ScoreCache(tmp_path / "cache")
    cache.root.mkdir()
    if curves is None:
        curves = {}
        for key, (first, spike) in {"a_1": (10, 30), "a_2": (20, 35)}.items():
            curves[key] = np.full(40, 0.1, dtype=np.float32)
            curves[key][first : first + 5] = 0.9
            curves[key][spike] = 0.95
    for key, scores in curves.items():
        cache.save(key, FrameScores(scores=scores, boxes=np.tile(np.float32(BOX), (40, 1))))
    return annotations, cache.root


def test_grid_search_ranks_the_smoothing_that_finds_the_sightings_first(tmp_path: Path) -> None:
    annotations, cache = _files(tmp_path)
    rows = tune_postprocess.grid_search(
        annotations, cache, [1, 3], [0.79], [0.5, 0.99], ["constant"], ["stAP25", "success"]
    )
    assert len(rows) == 4
    best = rows[0]
    assert best["median_kernel"] == 3 and best["success"] == 100.0 and best["stAP25"] == 1.0
    assert best["objective"] == 1.0
    unsmoothed = [r for r in rows if r["median_kernel"] == 1]
    assert all(r["success"] == 0.0 and r["objective"] < 0.5 for r in unsmoothed)  # the spikes win without it


def test_peak_scores_rank_the_confident_track_first(tmp_path: Path) -> None:
    """Query 1 gets a confident right track, query 2 (last in the file) a doubtful wrong one: with constant scores
    the AP ranking is the reverse file order, as upstream ranks ties (wrong first: stAP25 0.25); with peak scores
    the right one leads (0.5)."""
    right, wrong = np.full(40, 0.1, dtype=np.float32), np.full(40, 0.1, dtype=np.float32)
    right[10:15], wrong[30:35] = 0.9, 0.3
    annotations, cache = _files(tmp_path, {"a_1": right, "a_2": wrong})
    rows = tune_postprocess.grid_search(annotations, cache, [1], [0.79], [0.5], ["constant", "peak"], ["stAP25"])
    by_mode = {r["score"]: r for r in rows}
    assert by_mode["constant"]["stAP25"] == 0.25 and by_mode["peak"]["stAP25"] == 0.5
    assert rows[0]["score"] == "peak" and by_mode["peak"]["success"] == by_mode["constant"]["success"] == 50.0


def test_cli_writes_every_row_and_rejects_an_unknown_metric(tmp_path: Path) -> None:
    annotations, cache = _files(tmp_path)
    out = tmp_path / "tune.json"
    base = [sys.executable, str(SCRIPT), "--annotations", str(annotations), "--cache", str(cache)]
    done = subprocess.run([*base, "--kernels", "1,3", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    written = json.loads(out.read_text())
    assert written["objective"] == ["stAP25", "success", "recovery"]
    assert len(written["rows"]) == 2 * 8 * 6 * 2 and written["rows"][0]["median_kernel"] == 3
    for args, message in [
        (["--objective", "stAP9"], "stAP9"),
        (["--kernels", "2"], "odd"),
        (["--peak-ratios", "1.5"], "peak_ratio"),
        (["--kernels", "x"], "invalid literal"),
    ]:
        bad = subprocess.run([*base, *args], capture_output=True, text=True)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)
    missing = subprocess.run([*base[:3], str(tmp_path / "nope.json"), *base[4:]], capture_output=True, text=True)
    assert missing.returncode == 2 and "nope.json" in missing.stderr and "Traceback" not in missing.stderr


def test_after_visual_crop_reaches_the_sighting_after_the_crop(tmp_path: Path) -> None:
    """Query 1's crop frame (45) lies after the search range: no change. Query 2's crop is moved to frame 5, where
    its curve peaks highest: only with the rule does the search skip that sighting and find frames 20-24."""
    crop_first = np.full(40, 0.1, dtype=np.float32)
    crop_first[3:8], crop_first[20:25] = 0.95, 0.45
    right = np.full(40, 0.1, dtype=np.float32)
    right[10:15] = 0.9
    annotations, cache = _files(tmp_path, {"a_1": right, "a_2": crop_first})
    data = json.loads(annotations.read_text())
    data["videos"][0]["clips"][0]["annotations"][0]["query_sets"]["2"]["visual_crop"]["frame_number"] = 5
    annotations.write_text(json.dumps(data))
    plain, rule = (
        tune_postprocess.grid_search(annotations, cache, [1], [0.79], [0.5], ["constant"], ["success"], after)[0]
        for after in (False, True)
    )
    assert plain["success"] == 50.0 and rule["success"] == 100.0
    out = tmp_path / "rule.json"
    base = [sys.executable, str(SCRIPT), "--annotations", str(annotations), "--cache", str(cache), "--out", str(out)]
    done = subprocess.run([*base, "--kernels", "1", "--after-visual-crop"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert max(r["success"] for r in json.loads(out.read_text())["rows"]) == 100.0


def test_compare_grids_rescores_every_grid_against_the_best_of_all(tmp_path: Path) -> None:
    compare = LAB / "compare_grids.py"

    def row(kernel: int, stap: float, success: float) -> dict:
        metrics = dict.fromkeys(compare_grids.METRICS, 0.0) | {"stAP25": stap, "success": success}
        return {"median_kernel": kernel, "peak_ratio": 0.5, "track_ratio": 0.5, "score": "peak", **metrics}

    strong = [row(1, 0.4, 80.0), row(3, 0.2, 40.0)]
    weak = [row(1, 0.1, 60.0), row(5, 0.2, 20.0)]  # alone, each row would score 1.0 on one metric
    best = compare_grids.best_rows({"strong": strong, "weak": weak}, ["stAP25", "success"])
    assert best["strong"]["median_kernel"] == 1 and best["strong"]["joint"] == 1.0
    assert best["weak"]["median_kernel"] == 1 and best["weak"]["joint"] == pytest.approx((0.1 / 0.4 + 60 / 80) / 2)
    files = []
    for name, rows in (("strong", strong), ("weak", weak)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"objective": ["stAP25", "success"], "rows": rows}))
        files.append(f"{name}={path}")
    done = subprocess.run([sys.executable, str(compare), *files], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "| strong | 1 |" in done.stdout and done.stdout.rstrip().endswith("0.500 |")
    (tmp_path / "other.json").write_text(json.dumps({"objective": ["stAP25"], "rows": strong}))
    (tmp_path / "broken.json").write_text("{")
    for args, message in [
        ([files[0], f"o={tmp_path / 'other.json'}"], "differs"),
        ([f"b={tmp_path / 'broken.json'}"], "broken.json"),
        ([f"m={tmp_path / 'missing.json'}"], "missing.json"),
        (["nogrid"], "NAME=grid.json"),
    ]:
        bad = subprocess.run([sys.executable, str(compare), *args], capture_output=True, text=True)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)


def test_crop_sightings_counts_tracks_on_the_crop_and_on_the_truth(tmp_path: Path) -> None:
    from prvql.data.annotations import load_annotations
    from prvql.infer.predictions import write_predictions
    from prvql.metrics.structures import ResponseTrack

    script = LAB / "crop_sightings.py"
    annotations_path, _ = _files(tmp_path)
    data = json.loads(annotations_path.read_text())
    data["videos"][0]["clips"][0]["annotations"][0]["query_sets"]["2"]["visual_crop"]["frame_number"] = 5
    annotations_path.write_text(json.dumps(data))  # query 2 (truth 20-24): crop on frame 5; query 1's crop is after
    annotations = load_annotations(annotations_path)

    def track(first: int, last: int) -> ResponseTrack:
        return ResponseTrack.from_pairs([(f, tuple(BOX)) for f in range(first, last + 1)])

    on_crop, on_truth = tmp_path / "crop.json", tmp_path / "truth.json"
    write_predictions(on_crop, annotations, {"a_1": track(3, 8), "a_2": track(3, 8)})
    write_predictions(on_truth, annotations, {"a_1": track(3, 8), "a_2": track(22, 30)})
    done = subprocess.run(
        [sys.executable, str(script), "--annotations", str(annotations_path), str(on_crop), str(on_truth)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert "1 queries" in first and "crop's frame in 1, meets the truth in 0" in first
    assert "crop's frame in 0, meets the truth in 1" in second
    bad = subprocess.run(
        [sys.executable, str(script), "--annotations", str(annotations_path), str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "none.json" in bad.stderr and "Traceback" not in bad.stderr
