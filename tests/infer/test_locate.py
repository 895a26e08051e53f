"""`prvql locate` end to end on a synthetic 10 fps video, `prvql visualize`, and their input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prvql.cli import main
from prvql.data.video import VideoReader, write_video

HEIGHT, WIDTH, SOURCE_FPS, NUM_FRAMES = 64, 96, 10.0, 20


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """20 frames at 10 fps: a bright square moving over smooth noise."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (NUM_FRAMES, HEIGHT // 8, WIDTH // 8, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
    for i, frame in enumerate(frames):
        frame[20:40, 10 + 2 * i : 30 + 2 * i] = 255
    path = tmp_path / "walk.mp4"
    write_video(path, frames, fps=SOURCE_FPS)
    return path


def locate(video: Path, weights: Path, out: Path, *query: str) -> int:
    return main(
        ["locate", "--video", str(video), *query, "--weights", str(weights), "--output", str(out), "--device", "cpu"]
    )


def check_outputs(out: Path, searched: int, video_frames: int) -> dict:
    report = json.loads((out / "track.json").read_text())
    assert report["searched_frames"] == searched and report["model_fps"] == 5.0
    assert report["source_fps"] == pytest.approx(SOURCE_FPS)
    curve = report["curve"]
    assert [c["frame"] for c in curve] == list(range(searched))
    assert [c["source_frame"] for c in curve] == [2 * k for k in range(searched)]  # 10 fps sampled at 5 fps
    assert [c["time"] for c in curve] == pytest.approx([0.2 * k for k in range(searched)])
    for c in curve:
        x1, y1, x2, y2 = c["box"]
        assert 0 <= x1 <= x2 <= WIDTH and 0 <= y1 <= y2 <= HEIGHT and 0 < c["score"] < 1
    track = report["track"]
    assert 0 <= track["start"] <= track["peak"] <= track["end"] < searched
    assert [f["frame"] for f in track["frames"]] == list(range(track["start"], track["end"] + 1))
    assert track["peak_threshold"] > track["track_threshold"] > 0
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with VideoReader(out / "track.mp4") as reader:
        assert reader.num_frames == video_frames and reader.fps == pytest.approx(5.0)
        assert (reader.height, reader.width) == (HEIGHT, WIDTH)
    return report


def test_locate_with_a_box_on_a_frame(video: Path, tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert locate(video, tiny_weights, out, "--query-frame", "15", "--query-box", "50,20,20,20") == 0
    report = check_outputs(out, searched=8, video_frames=8 + 1)  # source frames 0, 2, .., 14; then the query frame
    assert report["query"] == {"frame": 15, "time": 1.5, "box": [50.0, 20.0, 70.0, 40.0], "search": "before"}


def test_locate_with_an_image_searches_the_whole_video(video: Path, tiny_weights: Path, tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "mug.png"
    Image.fromarray(np.full((24, 16, 3), 200, np.uint8)).save(image)
    out = tmp_path / "out"
    assert locate(video, tiny_weights, out, "--query", str(image)) == 0
    check_outputs(out, searched=10, video_frames=10)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (["--query-frame", "15", "--query-box", "50,20,0,20"], "--query-box: width and height must be > 0"),
        (["--query-frame", "15", "--query-box", "50,20,20"], "--query-box: expected x,y,w,h"),
        (["--query-frame", "15", "--query-box", "a,b,c,d"], "--query-box: expected x,y,w,h"),
        (
            ["--query-frame", "15", "--query-box", "500,200,20,20"],
            "--query-box: [500.0, 200.0, 520.0, 220.0] lies outside",
        ),
        (["--query-frame", "15"], "--query-frame and --query-box go together"),
        (["--query-frame", "99", "--query-box", "1,1,5,5"], "--query-frame: must be a frame index in [0, 20)"),
        (["--query-frame", "0", "--query-box", "1,1,5,5"], "--query-frame: no frame"),
        (["--query", "nowhere.png"], "nowhere.png: query image not found"),
    ],
)
def test_locate_bad_queries_exit_2(
    video: Path, tiny_weights: Path, tmp_path: Path, capsys, query: list[str], message: str
) -> None:
    assert locate(video, tiny_weights, tmp_path / "out", *query) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out" / "track.json").exists()


def test_locate_bad_model_rate_exits_2(video: Path, tiny_weights: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert (
        locate(video, tiny_weights, out, "--query-frame", "15", "--query-box", "1,1,5,5", "--set", "inference.fps=0")
        == 2
    )
    assert capsys.readouterr().err.strip() == "prvql: error: inference.fps: must be > 0 (got 0.0)"
    assert not out.exists()


def test_locate_missing_or_broken_video_exit_2(tiny_weights: Path, tmp_path: Path, capsys) -> None:
    assert (
        locate(tmp_path / "none.mp4", tiny_weights, tmp_path / "out", "--query-frame", "3", "--query-box", "1,1,5,5")
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "none.mp4" in err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    assert locate(broken, tiny_weights, tmp_path / "out", "--query-frame", "3", "--query-box", "1,1,5,5") == 2
    assert "broken.mp4" in capsys.readouterr().err


def test_config_without_weights_is_refused(video: Path, tmp_path: Path, capsys) -> None:
    argv = [
        "locate",
        "--video",
        str(video),
        "--query-frame",
        "5",
        "--query-box",
        "1,1,5,5",
        "--config",
        "tiny",
        "--output",
        str(tmp_path / "out"),
    ]
    assert main(argv) == 2
    assert "--weights" in capsys.readouterr().err


def test_default_weights_path_names_the_missing_file(monkeypatch, tmp_path: Path) -> None:
    from prvql.errors import CheckpointError
    from prvql.infer import trained_model

    monkeypatch.setattr(trained_model, "PACKAGE_DIR", tmp_path)
    with pytest.raises(CheckpointError, match="demo.safetensors"):
        trained_model.default_weights_path()


def test_the_default_model_runs_with_the_config_stored_in_its_weights(
    monkeypatch, tmp_path: Path, tiny_cfg, tiny_model
) -> None:
    """The shipped model's post-processing was chosen for it and written into its file: without --config the
    commands must use that, not the preset's defaults."""
    from prvql.config import apply_overrides
    from prvql.infer import trained_model
    from prvql.weights_file import save_weights

    stored = apply_overrides(tiny_cfg, ["inference.median_kernel=7", "inference.peak_ratio=0.42"])
    (tmp_path / "weights").mkdir()
    save_weights(tiny_model, tmp_path / "weights" / "demo.safetensors", stored)
    monkeypatch.setattr(trained_model, "PACKAGE_DIR", tmp_path)
    cfg, _ = trained_model.load_inference_model(None, None)
    assert (cfg.inference.median_kernel, cfg.inference.peak_ratio) == (7, 0.42)
    assert cfg.model == tiny_cfg.model


def test_crop_box_widens_to_whole_pixels_and_stays_inside() -> None:
    from prvql.infer.render import crop_box

    rows, cols = np.mgrid[0:10, 0:20]
    image = np.stack([cols, rows, np.zeros_like(rows)], axis=-1).astype(np.uint8)  # pixel = (column, row, 0)
    crop = crop_box(image, (2.5, 3.2, 6.1, 7.0))
    assert crop.shape == (4, 5, 3) and tuple(crop[0, 0, :2]) == (2, 3) and tuple(crop[-1, -1, :2]) == (6, 6)
    assert crop_box(image, (-5.0, -5.0, 100.0, 100.0)).shape == (10, 20, 3)
    assert crop_box(image, (25.0, 12.0, 30.0, 15.0)).shape == (1, 1, 3)  # outside: the nearest corner pixel


def test_video_frame_pastes_the_inset_and_evens_the_sides() -> None:
    from prvql.infer.render import MIN_INSET_SIDE, Overlay, video_frame

    frame = np.zeros((65, 97, 3), np.uint8)
    inset = np.full((100, 50, 3), 255, np.uint8)
    out = video_frame(frame, [Overlay((60.0, 30.0, 90.0, 60.0), "#00ff00", None, 1)], inset)
    assert out.shape == (64, 96, 3)
    side = MIN_INSET_SIDE  # a quarter of the short side (16) is below the minimum
    assert (out[:side, : side // 2] == 255).all() and (out[side, 0] == 0).all() and (out[0, side // 2] == 0).all()
    assert out[30, 60:91, 1].max() == 255  # the box's top edge is drawn


def test_locate_interrupted_while_writing_leaves_none_of_its_outputs(
    video: Path, tiny_weights: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """track.json used to be published before scores.png and track.mp4 were written: a kill in between left a
    partial set. Now the three appear together; an interrupted run leaves an existing folder as it was."""
    import prvql.infer.outputs as outputs_module

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    frames_of = outputs_module.overlay_frames

    def interrupted(*args, **kwargs):
        for k, frame in enumerate(frames_of(*args, **kwargs)):
            if k == 3:
                raise KeyboardInterrupt
            yield frame

    monkeypatch.setattr(outputs_module, "overlay_frames", interrupted)
    assert locate(video, tiny_weights, out, "--query-frame", "15", "--query-box", "50,20,20,20") == 130
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    monkeypatch.setattr(outputs_module, "overlay_frames", frames_of)
    assert locate(video, tiny_weights, out, "--query-frame", "15", "--query-box", "50,20,20,20") == 0
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "scores.png", "track.json", "track.mp4"]


def test_locate_decodes_the_video_once_and_renders_what_decoding_again_renders(
    video: Path, tiny_weights: Path, tmp_path: Path, monkeypatch
) -> None:
    """The searched frames are kept for track.mp4 (one decoding pass); above the memory cap the video is decoded a
    second time. Both hand the encoder the same frames (its bytes are not reproducible) and write the same
    track.json."""
    import torch

    import prvql.infer.outputs as outputs_module
    from prvql.infer.locate import KEEP_FRAMES_MB, Query, locate_video
    from prvql.infer.trained_model import load_inference_model

    cfg, model = load_inference_model(None, tiny_weights)
    passes, encoded = [], []
    iter_resampled, write_video_of = VideoReader.iter_resampled, outputs_module.write_video

    def counted(reader, *args, **kwargs):
        passes.append(args)
        return iter_resampled(reader, *args, **kwargs)

    def recorded(path, frames, fps):
        encoded.append([frame.copy() for frame in frames])
        return write_video_of(path, encoded[-1], fps)

    monkeypatch.setattr(VideoReader, "iter_resampled", counted)
    monkeypatch.setattr(outputs_module, "write_video", recorded)
    query = Query(frame=15, search="before", box=(50.0, 20.0, 70.0, 40.0))
    frame_mb = HEIGHT * WIDTH * 3 / 2**20
    reports = []
    # 8 frames searched: all kept by default; a cap of 5.5 frames drops them at the 6th and decodes again
    for keep_mb, decoding_passes in ((KEEP_FRAMES_MB, 1), (5.5 * frame_mb, 2)):
        passes.clear()
        out = tmp_path / f"keep{keep_mb}"
        located = locate_video(
            cfg, model, torch.device("cpu"), video, query, out, name="walk.mp4", keep_frames_mb=keep_mb
        )
        assert len(located.result) == 8 and len(passes) == decoding_passes
        reports.append((out / "track.json").read_text())
    kept, decoded_again = encoded
    assert len(kept) == len(decoded_again) == 8 + 1  # the searched frames, then the query frame
    assert all(np.array_equal(a, b) for a, b in zip(kept, decoded_again, strict=True))
    assert reports[0] == reports[1]


def test_crop_origin_tells_geometric_verification_where_the_crop_came_from() -> None:
    from prvql.infer.locate import VideoInfo, crop_origin

    info = VideoInfo(60, 30.0, 64, 48, sources=(0, 6, 12, 18), times=(0.0, 0.2, 0.4, 0.6))
    assert crop_origin(info, {"frame": 12, "box": [0, 0, 8, 8], "search": "anywhere"}) == (2, False)
    assert crop_origin(info, {"frame": 13, "box": [0, 0, 8, 8], "search": "anywhere"}) == (None, False)  # not searched
    assert crop_origin(info, {"frame": 12, "box": [0, 0, 8, 8], "search": "before"}) == (None, False)
    assert crop_origin(info, {"image": "crop.png", "search": "anywhere"}) == (None, True)
