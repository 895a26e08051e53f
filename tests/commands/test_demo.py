"""`prvql demo` end to end (tiny random model), the `locate` library function on an in-memory episode, bad args."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from prvql.cli import main
from prvql.config import Config
from prvql.data.video import VideoReader
from prvql.errors import PRVQLError
from prvql.synth.episode import Episode, SynthOptions, make_episode

SEED, FRAMES = 1, 40  # an episode whose response track is 4 frames long


def demo(out: Path, weights: Path, *extra: str) -> int:
    return main(["demo", "--output", str(out), "--weights", str(weights), "--device", "cpu", *extra])


def expected_metrics(track: list[dict], truth: list[dict]) -> dict[str, float]:
    """tIoU, stIoU, success, recovery, tAP25 and stAP25 of one query, from the definitions."""
    pred = {f["frame"]: f["box"] for f in track}
    gt = {f["frame"]: f["box"] for f in truth}
    (ps, pe), (gs, ge) = (min(pred), max(pred)), (min(gt), max(gt))
    overlap = max(0, min(pe, ge) - max(ps, gs) + 1)
    tiou = overlap / ((pe - ps + 1) + (ge - gs + 1) - overlap)

    def area(b: list[float]) -> float:
        return (b[2] - b[0]) * (b[3] - b[1])

    def intersection(a: list[float], b: list[float]) -> float:
        return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))

    common = sorted(set(pred) & set(gt))
    ious = {f: box_iou(torch.tensor([pred[f]]), torch.tensor([gt[f]])).item() for f in common}
    inter = sum(intersection(pred[f], gt[f]) for f in common)
    stiou = inter / (sum(map(area, pred.values())) + sum(map(area, gt.values())) - inter)
    return {
        "tiou": tiou,
        "stiou": stiou,
        "success": 100.0 * (stiou >= 0.05),
        "recovery": 100.0 * sum(iou >= 0.5 for iou in ious.values()) / len(gt),
        "tAP25": float(tiou >= 0.25),
        "stAP25": float(stiou >= 0.25),
    }


def test_demo_writes_every_output_and_scores_the_query(tiny_weights: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert demo(out, tiny_weights, "--seed", str(SEED), "--frames", str(FRAMES)) == 0
    episode = make_episode(SEED, SynthOptions(num_frames=FRAMES), pool="heldout")
    qf = episode.query_frame

    report = json.loads((out / "metrics.json").read_text())
    truth = report["episode"]["ground_truth"]
    assert report["episode"]["query_frame"] == qf and report["episode"]["seed"] == SEED
    assert [(t["frame"], tuple(t["box"])) for t in truth] == list(episode.response_track)

    track = json.loads((out / "track.json").read_text())
    assert track["searched_frames"] == qf and track["model_fps"] == episode.fps
    assert [c["frame"] for c in track["curve"]] == list(range(qf))
    frames = track["track"]["frames"]
    assert [f["frame"] for f in frames] == list(range(track["track"]["start"], track["track"]["end"] + 1))
    assert report["prediction"] == {"start": track["track"]["start"], "end": track["track"]["end"]}

    expected = expected_metrics(frames, truth)
    assert report["tiou"] == pytest.approx(expected["tiou"])
    assert report["stiou"] == pytest.approx(expected["stiou"], abs=1e-3)  # track.json boxes are rounded
    for key in ("success", "recovery", "tAP25", "stAP25"):
        assert report["metrics"][key] == pytest.approx(expected[key]), key

    captured = capsys.readouterr()
    printed = captured.out
    assert f"response track: frames {track['track']['start']}-{track['track']['end']}" in printed
    assert f"tAP25 {expected['tAP25']:.3f}" in printed and f"tIoU {expected['tiou']:.3f}" in printed
    # progress off a terminal: one line per phase on stderr
    assert [line.split(":")[0] for line in captured.err.splitlines()] == ["rendering episode", "searching"]
    assert f"searching: {qf}/{qf} frames in " in captured.err
    assert "elapsed" in printed and str(out / "track.mp4") in printed
    for name in ("track.json", "scores.png", "track.mp4", "query.png", "episode.mp4", "metrics.json"):
        assert name in printed and (out / name).is_file()

    from PIL import Image

    with Image.open(out / "query.png") as image:
        assert np.array_equal(np.asarray(image), episode.query)
    with VideoReader(out / "episode.mp4") as reader:
        assert reader.num_frames == FRAMES
    with VideoReader(out / "track.mp4") as reader:
        assert reader.num_frames == qf
        gt_frame, gt_box = episode.response_track[0]
        drawn = reader.read([gt_frame])[0].astype(int)
    x1, y1, x2, y2 = (int(round(v)) for v in gt_box)
    left_edge = np.s_[y1 + 2 : y2 - 2, x1]
    redness = drawn[..., 0] - drawn[..., 1]
    plain = episode.frames[gt_frame].astype(int)
    assert redness[left_edge].mean() > (plain[..., 0] - plain[..., 1])[left_edge].mean() + 60  # the truth in red


def test_demo_metrics_of_a_well_timed_track(tiny_weights: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """A stand-in predictor scores the true frames high; every other true frame's box is off by its width."""
    from prvql.infer.predictor import Predictor
    from prvql.infer.score_cache import FrameScores

    episode = make_episode(SEED, SynthOptions(num_frames=FRAMES), pool="heldout")

    def oracle(self, frames, query) -> FrameScores:
        for _ in zip(range(query.num_frames), frames, strict=False):
            pass
        scores = np.full(query.num_frames, 0.1, np.float32)
        boxes = np.tile(np.float32([0, 0, 8, 8]), (query.num_frames, 1))
        for i, (frame, (x1, y1, x2, y2)) in enumerate(episode.response_track):
            shift = 0.0 if i % 2 == 0 else x2 - x1
            scores[frame], boxes[frame] = 0.9, (x1 + shift, y1, x2 + shift, y2)
        return FrameScores(scores, boxes)

    monkeypatch.setattr(Predictor, "predict", oracle)
    out = tmp_path / "demo"
    assert demo(out, tiny_weights, "--seed", str(SEED), "--frames", str(FRAMES), "--no-video") == 0
    report = json.loads((out / "metrics.json").read_text())
    truth = report["episode"]["ground_truth"]
    track = json.loads((out / "track.json").read_text())["track"]
    assert (track["start"], track["end"]) == (truth[0]["frame"], truth[-1]["frame"])
    n = len(truth)
    assert report["tiou"] == 1.0 and report["recovered_frames"] == (n + 1) // 2
    metrics = report["metrics"]
    assert metrics["tAP25"] == 1.0 and metrics["success"] == 100.0
    assert metrics["recovery"] == pytest.approx(100.0 * ((n + 1) // 2) / n)
    expected = expected_metrics(track["frames"], truth)
    assert report["stiou"] == pytest.approx(expected["stiou"], abs=1e-3) and 0 < report["stiou"] < 1
    assert metrics["stAP25"] == expected["stAP25"]
    assert f"recovery {metrics['recovery']:.1f}%" in capsys.readouterr().out


def test_demo_is_reproducible_by_seed_and_no_video_skips_the_videos(tiny_weights: Path, tmp_path: Path) -> None:
    assert demo(tmp_path / "a", tiny_weights, "--frames", str(FRAMES), "--no-video") == 0
    assert demo(tmp_path / "b", tiny_weights, "--frames", str(FRAMES), "--no-video") == 0
    a, b = (json.loads((tmp_path / d / "track.json").read_text()) for d in "ab")
    assert a == b
    assert not (tmp_path / "a" / "track.mp4").exists() and not (tmp_path / "a" / "episode.mp4").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seed", "-1"], "--seed: must be in [0, 2**32)"),
        (["--frames", "1"], "--frames: must be in [2, 1000]"),
        (["--device", "nonsense"], "--device: not a device name"),
    ],
)
def test_demo_bad_args_exit_2(tiny_weights: Path, tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    assert demo(tmp_path / "out", tiny_weights, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_demo_config_without_weights_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--output", str(tmp_path / "out"), "--config", "tiny"]) == 2
    assert "--weights" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# the library function


@pytest.fixture
def episode() -> Episode:
    return make_episode(2, SynthOptions(num_frames=24, frame_width=96, frame_height=64), pool="heldout")


@pytest.fixture
def locator(tiny_cfg: Config, tiny_weights: Path):
    from prvql.infer.postprocess import build_postprocessor
    from prvql.infer.predictor import build_predictor
    from prvql.infer.trained_model import load_inference_model

    cfg, model = load_inference_model(None, tiny_weights)
    return build_predictor(cfg, model, "cpu"), build_postprocessor(cfg.inference)


def test_locate_reads_only_the_frames_before_the_query_frame(episode: Episode, locator) -> None:
    from prvql.infer.locate import locate

    read = []

    def stream():
        for k, frame in enumerate(episode.frames):
            read.append(k)
            yield frame

    qf, vc = episode.query_frame, episode.visual_crop_frame
    result = locate(*locator, stream(), episode.frames[vc], episode.visual_crop_box, num_frames=qf)
    assert read == list(range(qf))  # frames from the query frame on are never decoded
    assert len(result) == qf and result.frame_size == (64, 96)
    assert ((result.scores > 0) & (result.scores < 1)).all()
    assert (result.boxes[:, [0, 2]] >= 0).all() and (result.boxes[:, [0, 2]] <= 96).all()
    assert (result.boxes[:, [1, 3]] >= 0).all() and (result.boxes[:, [1, 3]] <= 64).all()
    assert (result.boxes[:, 2:] >= result.boxes[:, :2]).all()
    w = result.window
    assert result.track.frames.tolist() == list(range(w.start, w.end + 1))
    np.testing.assert_allclose(result.track.boxes, result.boxes[w.start : w.end + 1])
    assert np.array_equal(result.crop, episode.query)


def test_locate_with_a_whole_image_query_and_a_bad_box(episode: Episode, locator) -> None:
    from prvql.infer.locate import locate

    frames = episode.frames[: episode.query_frame]
    result = locate(*locator, frames, episode.query)  # the sized array gives the frame count
    h, w = episode.query.shape[:2]
    assert len(result) == episode.query_frame and result.query_box == (0.0, 0.0, float(w), float(h))
    assert np.array_equal(result.crop, episode.query)
    with pytest.raises(PRVQLError, match="lies outside"):
        locate(*locator, frames, episode.query, (500.0, 500.0, 600.0, 600.0))
    with pytest.raises(PRVQLError, match="no frames"):
        locate(*locator, frames[:0], episode.query)


def test_write_locate_outputs_marks_the_ground_truth(episode: Episode, locator, tmp_path: Path) -> None:
    from prvql.infer.locate import locate
    from prvql.infer.outputs import write_locate_outputs
    from prvql.metrics.structures import ResponseTrack

    frames = episode.frames[: episode.query_frame]
    vc = episode.visual_crop_frame
    result = locate(*locator, frames, episode.frames[vc], episode.visual_crop_box)
    truth = ResponseTrack.from_pairs(episode.response_track)
    written = write_locate_outputs(
        result, frames, tmp_path, episode.fps, info={"name": "ep"}, ground_truth=truth, show_query_frame=True
    )
    assert written == [tmp_path / "track.json", tmp_path / "scores.png", tmp_path / "track.mp4"]
    report = json.loads((tmp_path / "track.json").read_text())
    assert next(iter(report)) == "name" and report["source_fps"] == episode.fps
    assert [c["time"] for c in report["curve"]] == pytest.approx([k / episode.fps for k in range(len(result))])
    with VideoReader(tmp_path / "track.mp4") as reader:
        assert reader.num_frames == len(result) + 1  # the query frame last


@pytest.mark.parametrize("rule", [False, True])
def test_demo_after_visual_crop_skips_the_crop_sighting(
    tiny_cfg: Config, tiny_model: torch.nn.Module, tmp_path: Path, monkeypatch, capsys, rule: bool
) -> None:
    """Seed 5 (40 frames): crop on frame 5, truth 20-25, query frame 34. A stand-in predictor scores the crop's
    sighting (3-7) far above the truth: the paper's rule tracks the crop's sighting, inference.after_visual_crop
    the truth, and track.json and scores.png say which frames were ruled out."""
    import dataclasses

    from prvql.infer.predictor import Predictor
    from prvql.infer.score_cache import FrameScores
    from prvql.weights_file import save_weights

    seed = 5
    episode = make_episode(seed, SynthOptions(num_frames=FRAMES), pool="heldout")
    crop = episode.visual_crop_frame
    truth = [f for f, _ in episode.response_track]
    assert crop + 2 < truth[0] and truth[-1] < episode.query_frame  # the episode this test relies on

    def stand_in(self, frames, query) -> FrameScores:
        for _ in zip(range(query.num_frames), frames, strict=False):
            pass
        scores = np.full(query.num_frames, 0.1, np.float32)
        scores[crop - 2 : crop + 3] = 0.95
        scores[truth] = 0.5
        boxes = np.tile(np.float32([0, 0, 8, 8]), (query.num_frames, 1))
        for frame, box in episode.response_track:
            boxes[frame] = box
        return FrameScores(scores, boxes)

    cfg = dataclasses.replace(tiny_cfg, inference=dataclasses.replace(tiny_cfg.inference, after_visual_crop=rule))
    weights = tmp_path / "rule.safetensors"
    save_weights(tiny_model, weights, cfg)
    monkeypatch.setattr(Predictor, "predict", stand_in)
    out = tmp_path / "demo"
    assert demo(out, weights, "--seed", str(seed), "--frames", str(FRAMES), "--no-video") == 0
    track = json.loads((out / "track.json").read_text())["track"]
    report = json.loads((out / "metrics.json").read_text())
    assert (f"frames 0-{crop} ruled out" in capsys.readouterr().out) == rule
    if rule:
        assert (track["start"], track["end"]) == (truth[0], truth[-1]) and track["first_frame"] == crop + 1
        assert report["metrics"]["success"] == 100.0
    else:
        assert (track["start"], track["end"]) == (crop - 2, crop + 2) and track["first_frame"] == 0
        assert report["stiou"] == 0.0


@pytest.mark.slow
def test_shipped_demo_model_loads() -> None:
    from prvql.infer.trained_model import load_inference_model

    cfg, model = load_inference_model(None, None)
    assert cfg.model.backbone.name == "efficientnet_lite0" and not model.training


@pytest.mark.slow
def test_make_demo_runs_the_shipped_model_on_seed_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What `make demo` runs: the shipped model on held-out episode 0 (the default is not picked by its result; the
    success rate over seeds 0-11 is measured by experiments/demo_model/demo_heldout.py, docs/DEMO.md)."""
    assert main(["demo", "--output", str(tmp_path), "--device", "cpu", "--no-video"]) == 0
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert result["episode"]["seed"] == 0
    out = capsys.readouterr().out
    assert "response track" in out and f"stIoU {result['stiou']:.3f}" in out
    assert result["prediction"]["end"] < result["episode"]["query_frame"]


# ---------------------------------------------------------------------------------------------------------------------
# run_demo, the library function behind the command, and what the command prints of its result


def test_run_demo_returns_what_it_wrote(tiny_weights: Path, tmp_path: Path) -> None:
    from prvql.demo import DemoResult, run_demo

    out = tmp_path / "demo"
    result = run_demo(out, seed=SEED, num_frames=FRAMES, weights=tiny_weights, device="cpu", videos=False)
    assert isinstance(result, DemoResult)
    assert result.written == [out / name for name in ("track.json", "scores.png", "query.png", "metrics.json")]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in result.written)
    track = json.loads((out / "track.json").read_text())
    report = json.loads((out / "metrics.json").read_text())

    assert result.track == (track["track"]["start"], track["track"]["end"])
    assert (result.peak, result.ruled_out_before) == (track["track"]["peak"], track["track"]["first_frame"])
    assert result.peak_score == pytest.approx(track["track"]["peak_score"])
    assert [row.frame for row in result.frames] == [f["frame"] for f in track["track"]["frames"]]
    for row, entry in zip(result.frames, track["track"]["frames"], strict=True):
        assert row.box == pytest.approx(entry["box"], abs=0.006) and row.score == pytest.approx(
            entry["score"], abs=1e-5
        )
        assert row.seconds == pytest.approx(entry["time"])
    assert result.frame_size == (track["height"], track["width"])
    assert result.query_frame == report["episode"]["query_frame"] == track["searched_frames"]
    assert result.seed == SEED and result.num_frames == FRAMES and result.fps == report["episode"]["fps"]

    truth = report["episode"]["ground_truth"]
    assert result.ground_truth == (truth[0]["frame"], truth[-1]["frame"])
    truth_frames = {t["frame"] for t in truth}
    assert [row.iou is not None for row in result.frames] == [row.frame in truth_frames for row in result.frames]
    assert result.metrics.to_dict() == report["metrics"]
    assert (result.tiou, result.stiou) == (report["tiou"], report["stiou"])
    assert result.recovered_frames == report["recovered_frames"] and result.device == report["device"] == "cpu"
    assert {k: round(v, 3) for k, v in result.seconds.items()} == report["seconds"]


def test_run_demo_names_the_field_not_a_flag(tiny_weights: Path, tmp_path: Path) -> None:
    from prvql.demo import run_demo

    for kwargs, field in (({"device": "nonsense"}, "device"), ({"config": "tiny", "weights": None}, "weights")):
        with pytest.raises(PRVQLError) as error:
            run_demo(tmp_path / "out", **{"weights": tiny_weights, "device": "cpu", **kwargs})
        assert error.value.field == field and str(error.value).startswith(f"{field}: ")
        assert "--" not in str(error.value)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(PRVQLError, match="is a file") as error:
        run_demo(tmp_path / "a_file", weights=tiny_weights, device="cpu")
    assert error.value.field == "output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "tiny.safetensors"]


def test_demo_prints_the_first_and_last_ten_frames_of_a_long_track() -> None:
    from prvql.commands.demo import report_lines
    from prvql.demo import DemoResult, TrackFrame
    from prvql.metrics.vq2d import VQ2DMetrics

    rows = [TrackFrame(f, f / 5, (1.0, 2.0, 3.0, 4.0), 0.5, 0.25 if f % 2 else None) for f in range(30, 55)]
    result = DemoResult(
        seed=3,
        num_frames=120,
        fps=5.0,
        frame_size=(240, 320),
        object_title="mug",
        visual_crop_frame=10,
        query_frame=100,
        ruled_out_before=11,
        ground_truth=(31, 40),
        track=(30, 54),
        peak=40,
        peak_score=0.9,
        frames=rows,
        metrics=VQ2DMetrics(tap=0.5, tap25=1.0, stap=0.2, stap25=0.0, success=100.0, recovery=40.0, num_queries=1),
        tiou=0.4,
        stiou=0.125,
        recovered_frames=4,
        written=[Path("out/track.json"), Path("out/metrics.json")],
        device="cpu",
        seconds=dict.fromkeys(("load_model", "render_episode", "search", "write_outputs", "total"), 1.0),
    )
    lines = report_lines(result)
    assert lines[0].startswith("episode: seed 3, held-out imagery, 120 frames at 5 fps (320x240); query 'mug'")
    assert lines[1].startswith("frames 0-10 ruled out") and lines[2] == "ground truth: frames 31-40"
    assert lines[3] == "response track: frames 30-54 (peak frame 40, score 0.900)"
    table = lines[5:26]
    printed = [int(line.split()[0]) for line in table if not line.strip().startswith("...")]
    assert printed == [*range(30, 40), *range(45, 55)] and table[10].strip() == "...  (5 more frames in track.json)"
    assert table[0].endswith("0.500  -") and table[1].endswith("0.500  0.25")  # frame 30 has no true box
    assert "stAP25 0.000" in lines[26] and "stIoU 0.125" in lines[26] and "recovery 40.0%" in lines[26]
    assert lines[27] == "wrote out/track.json, out/metrics.json" and lines[28].startswith("elapsed 1.0 s on cpu")
