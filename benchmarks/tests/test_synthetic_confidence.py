"""benchmarks.synthetic_confidence on a tiny generated set with the tiny model: the report follows from the
cached curves, the three track scores share their tracks, and bad input writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.synthetic_confidence import SCORES, auroc, first_clips, main
from prvql.config import config_from_dict
from prvql.data.annotations import load_annotations
from prvql.infer.confidence import SIGNALS, judge
from prvql.infer.postprocess import build_postprocessor
from prvql.infer.score_cache import ScoreCache
from tests.conftest import synth_root, tiny_cfg, tiny_model, tiny_weights  # noqa: F401


def test_auroc_counts_pairs_and_ties() -> None:
    right = np.array([True, True, False, False])
    assert auroc(np.array([0.9, 0.4, 0.5, 0.1]), right) == pytest.approx(0.75)  # 3 of 4 pairs ordered
    assert auroc(np.array([0.5, 0.5, 0.5, 0.5]), right) == pytest.approx(0.5)
    assert auroc(np.array([0.1, 0.2]), np.array([True, True])) is None


def test_first_clips_keeps_the_first_clips_in_file_order(synth_root: Path, tmp_path: Path) -> None:  # noqa: F811
    source = load_annotations(synth_root / "vq_train.json")
    clips = [c.clip_uid for v in source.videos for c in v.clips]
    assert len(clips) >= 2
    for count in (1, 2, len(clips) + 5):
        cut = load_annotations(first_clips(synth_root / "vq_train.json", count, tmp_path / f"cut{count}.json"))
        assert [c.clip_uid for v in cut.videos for c in v.clips] == clips[:count]


@pytest.mark.slow
def test_report_on_a_tiny_set(synth_root: Path, tiny_weights: Path, tmp_path: Path) -> None:  # noqa: F811
    annotations = synth_root / "vq_val.json"
    output, work = tmp_path / "report.json", tmp_path / "work"
    args = ["--annotations", str(annotations), "--clips", str(synth_root / "clips"), "--output", str(output)]
    assert main([*args, "--weights", str(tiny_weights), "--work", str(work)]) == 0
    report = json.loads(output.read_text())
    valid = [r for r in load_annotations(annotations).records() if r.is_valid and r.response_track]

    challenge = report["challenge"]
    assert set(challenge) == set(SCORES)
    for score in SCORES:  # the same tracks, ranked by another score: success and recovery do not move
        assert challenge[score]["num_queries"] == len(valid)
        for key in ("success", "recovery"):
            assert challenge[score][key] == pytest.approx(challenge["constant"][key])

    cache = ScoreCache(work / "predictions.json.cache")
    cfg = config_from_dict(cache.read_config())
    rows = report["queries"]
    assert sorted(r["key"] for r in rows) == sorted(r.key for r in valid)
    for row in rows:  # geometric off: the confidence of the curve alone, from the plain track
        scores = cache.load(row["key"]).scores
        _, window = build_postprocessor(cfg.inference)(scores, cache.load(row["key"]).boxes)
        off = row["geometric_off"]
        assert off["confidence"] == pytest.approx(judge(cfg.inference.confidence, scores, window, None).confidence)
        assert off["inliers"] is None and row["geometric_on"]["inliers"] is not None
        for name in ("geometric_on", "geometric_off"):
            assert row[name]["found"] == (row[name]["confidence"] >= cfg.inference.confidence.threshold)
            assert list(row[name]["signals"]) == list(SIGNALS)  # what fit_confidence --synthetic reads
    for name in ("geometric_on", "geometric_off"):
        summary = report["locate"][name]
        right = sum(r[name]["stiou"] >= 0.05 for r in rows)
        assert summary["right"] == summary["right_not_found"][1] == right
        assert summary["wrong_found"][1] == len(rows) - right
        assert summary["found"] == sum(r[name]["found"] for r in rows)
        right_frame, found, searched = summary["crop_source_found"]
        assert right_frame <= found <= len(rows) and searched == sum(r["visual_crop_frame"] < r["frames"] for r in rows)


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, capsys) -> None:
    annotations = tmp_path / "vq_val.json"
    annotations.write_text("{}")
    output = tmp_path / "report.json"
    args = ["--annotations", str(annotations), "--clips", str(tmp_path / "nope"), "--output", str(output)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vq_val.json" in err
    assert main([*args[:-1], str(tmp_path / "missing" / "report.json")]) == 2
    assert "--output" in capsys.readouterr().err
    assert not output.exists()
