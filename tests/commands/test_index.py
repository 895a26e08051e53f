"""`prvql index` and `prvql locate --memory`: the same track.json as `locate --video`, and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prvql.cli import main
from prvql.data.video import write_video


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """30 frames at 10 fps: a bright square moving over smooth noise."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (30, 8, 12, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
    for i, frame in enumerate(frames):
        frame[20:40, 10 + 2 * i : 30 + 2 * i] = 255
    path = tmp_path / "walk.mp4"
    write_video(path, frames, fps=10.0)
    return path


def prvql(*args: object) -> int:
    return main([str(a) for a in args])


def one_line_error(capsys: pytest.CaptureFixture, *expected: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("prvql: error:"), err
    for text in expected:
        assert text in err[0], err[0]


def test_locate_on_a_memory_writes_the_track_of_the_video(
    video: Path, tiny_weights: Path, tmp_path: Path, capsys
) -> None:
    memory = tmp_path / "walk.h5"
    assert prvql("index", "--video", video, "--weights", tiny_weights, "--output", memory, "--device", "cpu") == 0
    assert "indexed 15 frames (15 new)" in capsys.readouterr().out
    query = ["--query-frame", "25", "--query-box", "50,20,20,20", "--weights", tiny_weights, "--device", "cpu"]
    assert prvql("locate", "--video", video, *query, "--output", tmp_path / "v") == 0
    assert prvql("locate", "--memory", memory, *query, "--output", tmp_path / "m") == 0
    from_video = json.loads((tmp_path / "v" / "track.json").read_text())
    from_memory = json.loads((tmp_path / "m" / "track.json").read_text())
    assert from_memory["video"] == str(video.resolve())
    for report in (from_video, from_memory):
        del report["video"]
    assert from_memory == from_video
    assert (tmp_path / "m" / "track.mp4").stat().st_size > 0


def test_without_the_original_video_the_thumbnails_serve(
    video: Path, tiny_weights: Path, tmp_path: Path, capsys
) -> None:
    memory = tmp_path / "walk.h5"
    assert prvql("index", "--video", video, "--weights", tiny_weights, "--output", memory, "--device", "cpu") == 0
    video.unlink()
    query = ["--weights", tiny_weights, "--device", "cpu", "--memory", memory]
    assert prvql("locate", *query, "--query-frame", "20", "--query-box", "50,20,20,20", "--output", tmp_path / "a") == 0
    report = json.loads((tmp_path / "a" / "track.json").read_text())
    assert report["searched_frames"] == 10 and (tmp_path / "a" / "track.mp4").stat().st_size > 0
    capsys.readouterr()
    assert prvql("locate", *query, "--query-frame", "21", "--query-box", "50,20,20,20", "--output", tmp_path / "b") == 2
    one_line_error(capsys, "--query-frame", "is gone", "not a sampled frame")


def test_refusals_are_one_line_exit_2(video: Path, tiny_weights: Path, tmp_path: Path, capsys) -> None:
    from prvql.config import load_config
    from prvql.model import build_prvql
    from prvql.weights_file import save_weights

    memory = tmp_path / "walk.h5"
    assert prvql("index", "--video", video, "--weights", tiny_weights, "--output", memory, "--device", "cpu") == 0
    capsys.readouterr()
    cfg = load_config("tiny")
    other = tmp_path / "other.safetensors"
    save_weights(build_prvql(cfg.model), other, cfg)
    query = ["--query-frame", "25", "--query-box", "50,20,20,20", "--device", "cpu", "--output", tmp_path / "o"]
    assert prvql("locate", "--memory", memory, "--weights", other, *query) == 2
    one_line_error(capsys, "--memory", "another model")
    other_video = tmp_path / "other.mp4"
    write_video(other_video, np.zeros((30, 64, 96, 3), np.uint8), fps=10.0)
    assert prvql("locate", "--memory", memory, "--video", other_video, "--weights", tiny_weights, *query) == 2
    one_line_error(capsys, "--video", "not the video")
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(memory.read_bytes()[:5000])
    assert prvql("locate", "--memory", corrupt, "--weights", tiny_weights, *query) == 2
    one_line_error(capsys, "corrupt.h5", "truncated or corrupt")
    assert prvql("locate", "--weights", tiny_weights, *query) == 2
    one_line_error(capsys, "--video", "--memory")
    assert prvql("index", "--video", tmp_path / "missing.mp4", "--output", tmp_path / "x.h5") == 2
    one_line_error(capsys, "missing.mp4")
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / ".x.h5.partial").exists()
    with pytest.raises(SystemExit) as usage:  # an argparse usage error
        prvql("index", "--video", video, "--output", tmp_path / "x.h5", "--storage", "bf8")
    assert usage.value.code == 2
    one_line_error(capsys, "--storage")
