"""``prvql weights get/list`` and ``--weights NAME`` in the inference commands, offline against a local server
(:class:`tests.test_named_weights.Site`) serving tiny checkpoints of the released layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prvql.cli import main
from tests.test_named_weights import DRIVE_PAGE, checkpoint_bytes, tar_bytes


def walking_clip(tmp_path: Path) -> Path:
    """20 frames, 64 x 96, a white square walking right."""
    from prvql.data.video import write_video

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (20, 8, 12, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
    for i, frame in enumerate(frames):
        frame[20:40, 10 + 2 * i : 30 + 2 * i] = 255
    clip = tmp_path / "walk.mp4"
    write_video(clip, frames, fps=10.0)
    return clip


@pytest.mark.slow
def test_get_then_locate_runs_offline_from_the_cache(site, cache, tmp_path, monkeypatch, capsys, prvql_file):
    site.pages["/uc"] = DRIVE_PAGE
    site.files["/download"] = prvql_file
    site.cut["/download"] = len(prvql_file) // 2
    monkeypatch.setenv("PRVQL_WEIGHTS_URL_PRVQL", f"{site.url}/uc?export=download&id=ID1")
    assert main(["weights", "get", "prvql", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "PRVQL, 3 stage(s)" in out and f"({len(prvql_file)} bytes, sha256 " in out
    assert f"wrote {cache / 'weights' / 'prvql.safetensors'}" in out
    site.stop()  # from here on, nothing can be downloaded

    clip = walking_clip(tmp_path)
    args = ["locate", "--video", str(clip), "--query-frame", "15", "--query-box", "50,20,20,20", "--device", "cpu"]
    assert main([*args, "--weights", "prvql", "--output", str(tmp_path / "out"), "--no-video"]) == 0
    report = json.loads((tmp_path / "out" / "track.json").read_text())
    assert len(report["curve"]) == 8 and len({c["score"] for c in report["curve"]}) > 1

    assert main(["weights", "get", "prvql"]) == 0
    assert "already cached" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert any(line.startswith("prvql ") and "cached: " in line for line in listed)
    assert any(line.startswith("vqloc ") and "not downloaded (prvql weights get vqloc)" in line for line in listed)


def test_get_takes_a_file_downloaded_elsewhere(cache, tmp_path, capsys):
    archive = tmp_path / "vqloc.tar"
    archive.write_bytes(tar_bytes({"cpt_best_prob.pth.tar": checkpoint_bytes("vqloc", "decoder")}))
    assert main(["weights", "get", "vqloc", "--file", str(archive), "--no-progress"]) == 0
    assert "VQLOC, 1 stage(s)" in capsys.readouterr().out
    assert (cache / "weights" / "vqloc.safetensors").is_file() and archive.is_file()  # the user's file stays


def test_a_corrupt_download_is_one_line_exit_2_and_nothing_is_cached(site, cache, monkeypatch, capsys, prvql_file):
    site.files["/p.pth"] = prvql_file[: len(prvql_file) // 3]
    monkeypatch.setenv("PRVQL_WEIGHTS_URL_PRVQL", f"{site.url}/p.pth")
    assert main(["weights", "get", "prvql", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"prvql: error: {site.url}/p.pth: not a readable checkpoint")
    assert not (cache / "weights" / "prvql.safetensors").exists() and list((cache / "downloads").iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["weights", "get", "prvql", "--file", "missing.pth"], "--file: missing.pth: checkpoint not found"),
        (["weights", "get", "dino"], "invalid choice: 'dino'"),
        (["demo", "--weights", "vqloc", "--output", "x"], "--weights: vqloc: the authors' VQLoC (NeurIPS 2023) model"),
    ],
)
def test_bad_names_and_files_are_one_line(cache, tmp_path, monkeypatch, capsys, argv, expected):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's refusals
        code = stop.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0]
    if argv[0] == "demo":
        assert "run `prvql weights get vqloc`" in err[0] and not (tmp_path / "x").exists()
