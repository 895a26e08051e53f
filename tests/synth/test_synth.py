"""`prvql synth`: official layout, parseable annotations, clips cut exactly from the canonical videos."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from prvql.cli import main
from prvql.commands import data as data_command
from prvql.commands import synth as synth_command
from prvql.data.annotations import load_annotations
from prvql.data.video import VideoReader
from prvql.synth.episode import SynthOptions, make_episode, make_scene
from prvql.synth.imagery import background_names, object_specs

FRAMES = 30


def run_command(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    argv = ["--output", str(root), "--clips", "3", "--frames", str(FRAMES), "--seed", "7", "--no-progress"]
    assert run_command(synth_command, argv) == 0
    return root


def test_official_layout_and_valid_annotations(synth_root: Path) -> None:
    train = load_annotations(synth_root / "vq_train.json")
    val = load_annotations(synth_root / "vq_val.json")
    assert len(train.clips()) == 2 and len(val.clips()) == 1
    assert len(train.videos) == 1  # two clips share one canonical video
    for ann in (train, val):
        assert ann.valid_records()
        for video_uid, clip in ann.clips():
            assert (synth_root / "videos" / f"{video_uid}.mp4").is_file()
            assert (synth_root / "clips" / f"{clip.clip_uid}.mp4").is_file()
            assert clip.num_frames == FRAMES
            assert len(clip.annotations[0].query_sets) == 3
        for r in ann.valid_records():
            first, last = r.response_frames
            assert last < r.query_frame < FRAMES
            assert not first <= r.visual_crop_frame <= last  # the visual crop is another sighting
            for _, (x1, y1, x2, y2) in r.response_track:
                assert 0 <= x1 < x2 <= r.frame_width and 0 <= y1 < y2 <= r.frame_height


def test_clips_are_every_sixth_canonical_frame(synth_root: Path) -> None:
    train = load_annotations(synth_root / "vq_train.json")
    video_uid, clip = train.clips()[1]  # the second clip of its video: a non-trivial start frame
    with VideoReader(synth_root / "videos" / f"{video_uid}.mp4") as video:
        canonical = video.read([clip.video_start_frame + 6 * j for j in range(FRAMES)]).astype(int)
        shifted = video.read([clip.video_start_frame + 6 * j + 3 for j in range(FRAMES)]).astype(int)
    with VideoReader(synth_root / "clips" / f"{clip.clip_uid}.mp4") as reader:
        assert reader.fps == pytest.approx(5)
        frames = reader.read(range(FRAMES)).astype(int)
    aligned = np.abs(frames - canonical).mean()
    assert aligned < 3 and aligned < np.abs(frames - shifted).mean()


def test_extraction_rerun_skips_valid_clips(synth_root: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["extract-clips", "--annotations", str(synth_root / "vq_train.json"), str(synth_root / "vq_val.json"),
            "--videos", str(synth_root / "videos"), "--output", str(synth_root / "clips"), "--no-progress"]  # fmt: skip
    assert run_command(data_command, argv) == 0
    assert "3 clips: 0 written, 3 already valid, 0 failed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--queries-per-clip", "0"], "--queries-per-clip: must be in [1, 64] (got 0)"),
        (["--query-sets-per-annotation", "0"], "--query-sets-per-annotation: must be in [1, 64] (got 0)"),
        (["--distractors", "-1"], "--distractors: must be in [0, 64] (got -1)"),
        (["--workers", "0"], "--workers: must be in [1, 256] (got 0)"),
        (["--val-fraction", "1.5"], "--val-fraction: must be in [0, 1] (got 1.5)"),
        (["--fresh-patches", "-0.1"], "--fresh-patches: must be in [0, 1] (got -0.1)"),
        (["--generated-objects", "1.5"], "--generated-objects: must be in [0, 1] (got 1.5)"),
        (["--seed", "-1"], "--seed: must be in [0, 2**63) (got -1)"),
    ],
)
def test_synth_bad_options_exit_2(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    assert main(["synth", "--output", str(tmp_path / "out"), "--clips", "1", "--no-progress", *argv]) == 2
    assert capsys.readouterr().err.strip() == f"prvql: error: {message}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["extract-clips", "--videos", "v", "--downscale-height", "-5"],
            "--downscale-height: must be in [1, 8192] (got -5)",
        ),
        (["extract-clips", "--videos", "v", "--workers", "0"], "--workers: must be in [1, 256] (got 0)"),
        (["cache-frames", "--clips", "c", "--window", "0"], "--window: must be in [1, 10000] (got 0)"),
        (["cache-frames", "--clips", "c", "--short-side", "-3"], "--short-side: must be in [1, 8192] (got -3)"),
        (["cache-frames", "--clips", "c", "--quality", "500"], "--quality: must be in [1, 100] (got 500)"),
    ],
)
def test_data_bad_options_exit_2(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    step, *rest = argv
    out = tmp_path / "out"
    assert main(["data", step, "--annotations", str(tmp_path / "none.json"), "--output", str(out), *rest]) == 2
    assert capsys.readouterr().err.strip() == f"prvql: error: {message}"
    assert not out.exists()


def test_make_episode_is_deterministic_and_sane() -> None:
    opts = SynthOptions(num_frames=24, frame_width=160, frame_height=120)
    a, b = make_episode(3, opts), make_episode(3, opts)
    assert np.array_equal(a.frames, b.frames) and a.response_track == b.response_track
    assert not np.array_equal(a.frames, make_episode(4, opts).frames)
    assert a.frames.shape == (24, 120, 160, 3) and a.fps == 5.0
    assert a.response_track[-1][0] < a.query_frame
    x1, y1, x2, y2 = (round(v) for v in a.visual_crop_box)
    assert a.query.shape == (y2 - y1, x2 - x1, 3)


def test_held_out_imagery_is_disjoint() -> None:
    train, heldout = object_specs("train"), object_specs("heldout")
    assert not {s.source for s in train} & {s.source for s in heldout}
    assert not set(background_names("train")) & set(background_names("heldout"))
    assert not {s.source for s in train} & {b.split("_")[0] for b in background_names("heldout")}
    opts = SynthOptions(num_frames=10, frame_width=160, frame_height=120)
    scene = make_scene(np.random.default_rng(0), opts, "heldout", duration=60)
    titles = {spec.title for spec in heldout}
    assert {scene.things[i].title for i in scene.targets} <= titles


def test_clips_only_writes_the_same_episodes_without_canonical_videos(synth_root: Path, tmp_path: Path) -> None:
    """`--clips-only` renders just the clip frames: same annotations, same pixels (up to one less H.264 pass)."""
    argv = ["--output", str(tmp_path), "--clips", "3", "--frames", str(FRAMES), "--seed", "7", "--no-progress"]
    assert run_command(synth_command, [*argv, "--clips-only"]) == 0
    assert not (tmp_path / "videos").exists()
    for split in ("train", "val"):
        assert (tmp_path / f"vq_{split}.json").read_text() == (synth_root / f"vq_{split}.json").read_text()
    _, clip = load_annotations(tmp_path / "vq_val.json").clips()[0]
    with (
        VideoReader(tmp_path / "clips" / f"{clip.clip_uid}.mp4") as a,
        VideoReader(synth_root / "clips" / f"{clip.clip_uid}.mp4") as b,
    ):
        assert a.num_frames == b.num_frames == FRAMES
        frames = [0, FRAMES // 2, FRAMES - 1]
        assert np.abs(a.read(frames).astype(int) - b.read(frames)).mean() < 4
