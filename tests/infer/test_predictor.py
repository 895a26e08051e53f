"""Predictor and `prvql predict`: backbone sharing, windowing, pixel mapping, the predictions file, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from prvql.cli import main
from prvql.config import Config
from prvql.data.transforms import prepare_frames
from prvql.data.video import VideoReader, write_video
from prvql.errors import PRVQLError
from prvql.infer.predictor import ClipQuery, Predictor, build_predictor, window_starts
from prvql.infer.score_cache import FrameScores

FRAME_H, FRAME_W = 64, 96  # decoded clip size
ORIG_H, ORIG_W = 128, 192  # the annotation's resolution (clips extracted at half size)


def random_frames(num: int, seed: int) -> np.ndarray:
    """uint8 [num, H, W, 3]: smooth random blobs (distinct frames that survive H.264)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (num, FRAME_H // 8, FRAME_W // 8, 3), dtype=np.uint8)
    return small.repeat(8, axis=1).repeat(8, axis=2)


def write_clip(path: Path, num: int, seed: int) -> np.ndarray:
    frames = random_frames(num, seed)
    write_video(path, frames, fps=5.0)
    return frames


def query_set(query_frame: int, crop_frame: int, valid: bool = True, track: tuple[int, int] | None = None) -> dict:
    box = {"x": 40, "y": 30, "width": 50, "height": 40, "original_width": ORIG_W, "original_height": ORIG_H}
    qs = {
        "is_valid": valid,
        "query_frame": query_frame,
        "object_title": "mug",
        "visual_crop": {"frame_number": crop_frame, **box},
    }
    if track is not None:
        qs["response_track"] = [{"frame_number": f, **box} for f in range(track[0], track[1] + 1)]
    return qs


@pytest.fixture
def dataset(tmp_path: Path) -> dict:
    """Two videos: clip A (14 frames; two valid query sets and an invalid one), a clip with a null uid,
    clip B (9 frames; one query, and one whose visual crop frame does not exist), and clip C whose mp4 is missing."""
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "clipA.mp4", 14, seed=1)
    write_clip(clips / "clipB.mp4", 9, seed=2)
    data = {
        "version": "1.0.5",
        "videos": [
            {
                "video_uid": "v1",
                "clips": [
                    {
                        "clip_uid": "clipA",
                        "annotations": [
                            {
                                "annotation_uid": "a1",
                                "query_sets": {
                                    "1": query_set(13, 13, track=(3, 5)),
                                    "2": query_set(7, 12, track=(1, 2)),
                                    "3": query_set(5, 5, valid=False),
                                },
                            }
                        ],
                    },
                    {"clip_uid": None, "annotations": [{"annotation_uid": "a2", "query_sets": {"1": query_set(4, 4)}}]},
                ],
            },
            {
                "video_uid": "v2",
                "clips": [
                    {
                        "clip_uid": "clipB",
                        "annotations": [
                            {
                                "annotation_uid": "a3",
                                "query_sets": {"1": query_set(8, 8, track=(2, 4)), "2": query_set(6, 50, track=(1, 2))},
                            }
                        ],
                    },
                    {
                        "clip_uid": "clipC",
                        "annotations": [{"annotation_uid": "a4", "query_sets": {"1": query_set(6, 6, track=(1, 1))}}],
                    },
                ],
            },
        ],
    }
    annotations = tmp_path / "vq_val.json"
    annotations.write_text(json.dumps(data))
    return {"root": tmp_path, "clips": clips, "annotations": annotations}


class Recorder:
    """Wraps a model's entry points to record what the backbone and the stages see (the Predictor runs the stages
    on embedded frames, ``forward_embedded``)."""

    def __init__(self, model: nn.Module) -> None:
        self.images: list[torch.Tensor] = []
        self.windows: list[torch.Tensor] = []
        extract, forward = model.extract_features, model.forward_embedded

        def extract_features(images: torch.Tensor) -> torch.Tensor:
            self.images.append(images.clone())
            return extract(images)

        def forward_embedded(video: torch.Tensor, query: torch.Tensor, **options) -> dict:
            self.windows.append(video.clone())
            return forward(video, query, **options)

        model.extract_features = extract_features
        model.forward_embedded = forward_embedded


def crop_query(key: str, frames: np.ndarray, num_frames: int, size: int) -> ClipQuery:
    from prvql.data.transforms import prepare_query

    return ClipQuery(key, prepare_query(frames[0], (10.0, 10.0, 40.0, 30.0), size), num_frames)


def test_window_starts() -> None:
    assert window_starts(13, 6, 6) == [0, 6, 12]
    assert window_starts(12, 6, 6) == [0, 6]
    assert window_starts(3, 6, 6) == [0]
    assert window_starts(13, 6, 4) == [0, 4, 8]
    assert window_starts(0, 6, 6) == []


def test_backbone_runs_once_per_frame_for_all_queries(dataset: dict, tiny_cfg: Config, tiny_model: nn.Module) -> None:
    size = tiny_cfg.model.input_size
    with VideoReader(dataset["clips"] / "clipA.mp4") as reader:
        decoded = reader.read(range(14))
        queries = [crop_query(k, decoded, n, size) for k, n in (("q13", 13), ("q7", 7), ("q4", 4))]
        recorder = Recorder(tiny_model)
        predictor = build_predictor(tiny_cfg, tiny_model)
        results = predictor.predict_clip(reader.iter_frames(0, 13), queries)

    assert {k: len(v) for k, v in results.items()} == {"q13": 13, "q7": 7, "q4": 4}
    assert sum(len(x) for x in recorder.images) == 13 + 3  # every searched frame once, plus one per query crop
    assert predictor.stats.backbone_images == 16
    frame_images = torch.cat(recorder.images[1:])  # the first call embeds the three query crops
    expected = prepare_frames(decoded[:13], size, tiny_cfg.data.pad_value)
    torch.testing.assert_close(frame_images, expected)  # frames 0..12 in order, none twice
    torch.testing.assert_close(recorder.images[0], torch.stack([q.image for q in queries]))


def _frame_ids(windows: list[torch.Tensor], reference: torch.Tensor) -> list[list[int]]:
    """Which reference frame each window position holds: [[frame index per position] per window]."""
    ids = []
    for batch in windows:
        for window in batch:
            dist = (window.flatten(1)[:, None] - reference.flatten(1)[None]).abs().amax(-1)  # [T, F]
            assert (dist.min(-1).values < 1e-5).all()
            ids.append(dist.argmin(-1).tolist())
    return ids


@pytest.mark.parametrize(
    ("overlap", "expected"),
    [
        (0, [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], [12] * 6]),
        (2, [[0, 1, 2, 3, 4, 5], [4, 5, 6, 7, 8, 9], [8, 9, 10, 11, 12, 12]]),
    ],
)
def test_windows_cover_search_range_and_pad_with_last_frame(
    dataset: dict, tiny_cfg: Config, tiny_model: nn.Module, overlap: int, expected: list[list[int]]
) -> None:
    tiny_cfg.inference.window_overlap = overlap
    size = tiny_cfg.model.input_size
    with VideoReader(dataset["clips"] / "clipA.mp4") as reader:
        decoded = reader.read(range(14))
    reference = tiny_model.embed(prepare_frames(decoded, size, tiny_cfg.data.pad_value))  # [14, D, h, w]
    recorder = Recorder(tiny_model)
    result = build_predictor(tiny_cfg, tiny_model).predict(iter(decoded), crop_query("q", decoded, 13, size))
    assert _frame_ids(recorder.windows, reference) == expected
    assert len(result) == 13 and np.isfinite(result.scores).all()
    assert ((result.scores > 0) & (result.scores < 1)).all()


def test_overlapping_windows_reduce_scores(dataset: dict, tiny_cfg: Config, tiny_model: nn.Module) -> None:
    """Frames seen by two windows get the mean (or the max) of their scores; the others are the same either way."""
    tiny_cfg.inference.window_overlap = 2
    size = tiny_cfg.model.input_size
    decoded = random_frames(13, seed=3)
    query = crop_query("q", decoded, 13, size)
    results = {}
    for reduce in ("mean", "max"):
        tiny_cfg.inference.overlap_reduce = reduce
        results[reduce] = build_predictor(tiny_cfg, tiny_model).predict(iter(decoded), query)
    once = np.array([0, 1, 2, 3, 6, 7, 10, 11, 12])  # windows start at 0, 4, 8 (length 6)
    np.testing.assert_allclose(results["mean"].scores[once], results["max"].scores[once], rtol=1e-6)
    assert (results["max"].scores >= results["mean"].scores - 1e-7).all()
    np.testing.assert_allclose(results["mean"].boxes, results["max"].boxes)  # the box of the best-scoring window


def test_scores_match_the_model_run_window_by_window(tiny_cfg: Config, tiny_model: nn.Module) -> None:
    """Two queries batched together over 12 frames = the plain model call on each 6-frame window and query."""
    size, pad = tiny_cfg.model.input_size, tiny_cfg.data.pad_value
    decoded = random_frames(12, seed=5)
    queries = [crop_query("a", decoded, 12, size), crop_query("b", decoded[6:], 12, size)]
    queries[1].image = queries[1].image.flip(-1)
    results = build_predictor(tiny_cfg, tiny_model).predict_clip(iter(decoded), queries)
    frames = prepare_frames(decoded, size, pad).view(2, 6, 3, size, size)
    with torch.inference_mode():
        for query in queries:
            out = tiny_model(frames, query.image[None].expand(2, -1, -1, -1))
            expected = torch.sigmoid(out["logits"].max(-1).values).flatten()
            np.testing.assert_allclose(results[query.key].scores, expected.numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(results["a"].scores, results["b"].scores)


def test_short_clip_is_searched_as_far_as_it_goes(tiny_cfg: Config, tiny_model: nn.Module) -> None:
    decoded = random_frames(5, seed=4)
    query = crop_query("q", decoded, 9, tiny_cfg.model.input_size)
    result = build_predictor(tiny_cfg, tiny_model).predict(iter(decoded), query)
    assert len(result) == 5


@pytest.mark.parametrize("overlap", [0, 2])
def test_feature_memory_does_not_grow_with_clip_length(tiny_cfg: Config, tiny_model: nn.Module, overlap: int) -> None:
    """At most one chunk of windows ((W - 1) * stride + T frames) of backbone features is held, however long."""
    tiny_cfg.inference.window_overlap = overlap
    size, window, per_batch = tiny_cfg.model.input_size, tiny_cfg.model.num_frames, tiny_cfg.inference.windows_per_batch
    held = []
    for length in (20, 60):
        decoded = random_frames(length, seed=6)
        predictor = build_predictor(tiny_cfg, tiny_model)
        predictor.predict(iter(decoded), crop_query("q", decoded, length, size))
        assert predictor.stats.frames_decoded == length
        held.append(predictor.stats.max_buffered_frames)
    assert held[0] == held[1] == (per_batch - 1) * (window - overlap) + window


class FixedOutputModel(nn.Module):
    """Stub for the pixel-mapping test only: every frame's best anchor (index 1) has a known normalised box."""

    def __init__(self, box: tuple[float, float, float, float]) -> None:
        super().__init__()
        self.box = torch.tensor(box)

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.zeros(images.shape[0], 2, 2, 2)

    def forward_features(self, frame_feats: torch.Tensor, query_feats: torch.Tensor) -> dict:
        b, t = frame_feats.shape[:2]
        logits = torch.tensor([-1.0, 2.0, 0.5]).expand(b, t, 3)
        boxes = torch.zeros(b, t, 3, 4)
        boxes[:, :, 0] = torch.tensor([0.0, 0.0, 1.0, 1.0])
        boxes[:, :, 1] = self.box
        return {"logits": logits, "boxes": boxes}


def test_boxes_are_mapped_back_to_original_pixels() -> None:
    predictor = Predictor(FixedOutputModel((0.25, 0.25, 0.75, 0.5)), num_frames=4, input_size=16, pad_value=0.5)
    frames = [np.zeros((FRAME_H, FRAME_W, 3), np.uint8)] * 6
    image = torch.zeros(3, 16, 16)
    decoded_size = predictor.predict(frames, ClipQuery("a", image, 6))
    original = predictor.predict(frames, ClipQuery("b", image, 6, output_size=(ORIG_H, ORIG_W)))
    # padded square of side 96 with a 16-pixel band on top: (24, 24 - 16, 72, 48 - 16)
    np.testing.assert_allclose(decoded_size.boxes, np.tile([24.0, 8.0, 72.0, 32.0], (6, 1)))
    np.testing.assert_allclose(original.boxes, np.tile([48.0, 16.0, 144.0, 64.0], (6, 1)))
    np.testing.assert_allclose(original.scores, np.full(6, 1 / (1 + np.exp(-2.0))), rtol=1e-6)


def test_inverted_best_box_leaves_the_predictor_sorted() -> None:
    """The head adds raw offsets to anchors, so a box can come out mirrored; what leaves the predictor is sorted."""
    predictor = Predictor(FixedOutputModel((0.75, 0.5, 0.25, 0.25)), num_frames=4, input_size=16, pad_value=0.5)
    frames = [np.zeros((FRAME_H, FRAME_W, 3), np.uint8)] * 6
    boxes = predictor.predict(frames, ClipQuery("a", torch.zeros(3, 16, 16), 6)).boxes
    np.testing.assert_allclose(boxes, np.tile([24.0, 8.0, 72.0, 32.0], (6, 1)))


def test_frame_scores_round_trip_and_reject_bad_files(tmp_path: Path) -> None:
    scores = FrameScores(np.linspace(0, 1, 5, dtype=np.float32), np.arange(20, dtype=np.float32).reshape(5, 4))
    scores.save(tmp_path / "a.npz")
    back = FrameScores.load(tmp_path / "a.npz")
    np.testing.assert_array_equal(back.scores, scores.scores)
    np.testing.assert_array_equal(back.boxes, scores.boxes)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(PRVQLError, match="bad.npz"):
        FrameScores.load(tmp_path / "bad.npz")


def _predict(dataset: dict, weights: Path, *extra: str) -> tuple[int, Path]:
    output = dataset["root"] / "pred.json"
    argv = [
        "predict",
        "--weights",
        str(weights),
        "--annotations",
        str(dataset["annotations"]),
        "--clips",
        str(dataset["clips"]),
        "--output",
        str(output),
        "--device",
        "cpu",
        *extra,
    ]
    return main(argv), output


def test_predict_writes_a_valid_file_that_evaluates(dataset: dict, tiny_weights: Path, capsys) -> None:
    from prvql.data.annotations import load_annotations
    from prvql.infer.predictions import load_predictions

    status, output = _predict(dataset, tiny_weights)
    assert status == 0
    annotations = load_annotations(dataset["annotations"])
    tracks = load_predictions(output, annotations)  # the validator: order, counts, contiguity, types
    assert set(tracks) == {"a1_1", "a1_2", "a2_1", "a3_1", "a3_2", "a4_1"}
    for key in ("a1_1", "a1_2", "a3_1"):
        first, last = tracks[key].extent
        assert len(tracks[key]) >= 1 and 0 <= first <= last < {"a1_1": 13, "a1_2": 7, "a3_1": 8}[key]
        assert (tracks[key].boxes[:, 2] <= ORIG_W).all() and (tracks[key].boxes[:, 3] <= ORIG_H).all()
    assert len(tracks["a2_1"]) == 0  # null clip uid
    assert len(tracks["a4_1"]) == 0  # missing clip: reported, empty, the run went on
    assert len(tracks["a3_2"]) == 0  # its visual crop frame is past the clip's end; a3_1 on the same clip is fine
    raw = json.loads(output.read_text())
    invalid = raw["results"]["videos"][0]["clips"][0]["predictions"][0]["query_sets"]["3"]
    assert invalid == {"bboxes": [], "score": 0.0}
    cache = output.with_name("pred.json.cache")
    assert sorted(p.name for p in cache.glob("*.npz")) == ["a1_1.npz", "a1_2.npz", "a3_1.npz"]
    assert len(FrameScores.load(cache / "a1_1.npz")) == 13
    capsys.readouterr()
    assert main(["evaluate", "--annotations", str(dataset["annotations"]), "--predictions", str(output), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_queries"] == 5


def test_predict_resume_reuses_the_cache(dataset: dict, tiny_weights: Path, monkeypatch) -> None:
    status, output = _predict(dataset, tiny_weights)
    assert status == 0
    first = output.read_text()
    calls = []
    original = Predictor._backbone
    monkeypatch.setattr(
        Predictor, "_backbone", lambda self, images: calls.append(len(images)) or original(self, images)
    )
    status, _ = _predict(dataset, tiny_weights, "--resume")
    assert status == 0 and calls == []
    assert output.read_text() == first
    status, _ = _predict(dataset, tiny_weights)  # without --resume everything is recomputed
    assert status == 0 and sum(calls) == (13 + 2) + (8 + 1)


def test_predict_resume_recomputes_corrupt_cache_entries_with_one_warning(
    dataset: dict, tiny_weights: Path, monkeypatch, caplog
) -> None:
    """A score file truncated by a crash (or random bytes, or an unreadable meta.json) no longer crashes every
    retry of predict --resume and visualize: it is computed again, with one warning."""
    status, output = _predict(dataset, tiny_weights)
    assert status == 0
    first = output.read_text()
    cache = output.with_name("pred.json.cache")
    whole = (cache / "a1_1.npz").read_bytes()
    (cache / "a1_1.npz").write_bytes(whole[: len(whole) // 2])
    (cache / "a3_1.npz").write_bytes(b"\x00" * 100)
    calls = []
    original = Predictor._backbone
    monkeypatch.setattr(
        Predictor, "_backbone", lambda self, images: calls.append(len(images)) or original(self, images)
    )
    caplog.clear()
    status, _ = _predict(dataset, tiny_weights, "--resume")
    assert status == 0 and output.read_text() == first
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and "2 cached results" in warnings[0]
    assert sum(calls) == (13 + 1) + (8 + 1)  # both clips searched again, for the two broken queries only
    assert len(FrameScores.load(cache / "a1_1.npz")) == 13
    (cache / "meta.json").write_text("{not json")
    (cache / "a1_1.npz").write_bytes(b"junk")
    status, _ = _predict(dataset, tiny_weights, "--resume")
    assert status == 0 and output.read_text() == first


def test_predict_resume_refuses_a_cache_from_other_settings(dataset: dict, tiny_weights: Path, capsys) -> None:
    assert _predict(dataset, tiny_weights)[0] == 0
    status, _ = _predict(dataset, tiny_weights, "--resume", "--set", "inference.window_overlap=1")
    assert status == 2
    assert "meta.json" in capsys.readouterr().err


def test_predict_max_clips_searches_a_sample(dataset: dict, tiny_weights: Path, capsys) -> None:
    """--max-clips 1 searches only the first clip with valid queries (clipA); the rest are written empty."""
    status, output = _predict(dataset, tiny_weights, "--max-clips", "1")
    assert status == 0
    cache = output.with_name("pred.json.cache")
    assert sorted(p.name for p in cache.glob("*.npz")) == ["a1_1.npz", "a1_2.npz"]
    raw = json.loads(output.read_text())
    clip_b = raw["results"]["videos"][1]["clips"][0]["predictions"][0]["query_sets"]["1"]
    assert clip_b == {"bboxes": [], "score": 0.0}
    capsys.readouterr()
    status, _ = _predict(dataset, tiny_weights, "--max-clips", "0")
    err = capsys.readouterr().err
    assert status == 2 and "--max-clips: must be >= 1 (got 0)" in err and len(err.strip().splitlines()) == 1


def test_predict_bad_inputs_exit_2(dataset: dict, tiny_weights: Path, capsys) -> None:
    status, _ = _predict({**dataset, "clips": dataset["root"] / "nowhere"}, tiny_weights)
    assert status == 2 and "--clips" in capsys.readouterr().err
    status, _ = _predict(dataset, dataset["root"] / "missing.safetensors")
    err = capsys.readouterr().err
    assert status == 2 and "missing.safetensors" in err and len(err.strip().splitlines()) == 1


def test_visualize_draws_prediction_and_truth(dataset: dict, tiny_weights: Path, capsys) -> None:
    status, output = _predict(dataset, tiny_weights)
    assert status == 0
    movie = dataset["root"] / "a1_1.mp4"
    argv = [
        "visualize",
        "--annotations",
        str(dataset["annotations"]),
        "--predictions",
        str(output),
        "--clips",
        str(dataset["clips"]),
        "--query",
        "a1_1",
        "--output",
        str(movie),
    ]
    assert main(argv) == 0
    with VideoReader(movie) as reader:
        assert reader.num_frames == 14  # frames 0..12 searched, then the query frame 13
        assert (reader.height, reader.width) == (FRAME_H, FRAME_W)
    assert movie.with_suffix(".scores.png").exists()
    capsys.readouterr()
    assert main([*argv[:-4], "--query", "zz_9", "--output", str(movie)]) == 2
    assert "zz_9" in capsys.readouterr().err
    cache = output.with_name("pred.json.cache")
    (cache / "a1_1.npz").write_bytes(b"truncated")  # a corrupt cache entry: drawn without the curve, with a warning
    movie.with_suffix(".scores.png").unlink()
    assert main(argv) == 0
    assert movie.exists() and not movie.with_suffix(".scores.png").exists()


def test_visualize_negative_margin_exits_2(tmp_path: Path, capsys) -> None:
    argv = ["visualize", "--annotations", "a.json", "--predictions", "p.json", "--clips", "c", "--query", "a_1"]
    assert main([*argv, "--output", str(tmp_path / "v.mp4"), "--margin", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "prvql: error: --margin: must be >= 0 (got -1)"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--height", "0"], "--height: must be in [1, 4096] (got 0)"),
        (["--frames", "0"], "--frames: must be in [1, 100000] (got 0)"),
    ],
)
def test_bench_bad_options_exit_2(capsys, argv: list[str], message: str) -> None:
    assert main(["bench", "--config", "tiny", *argv]) == 2
    assert capsys.readouterr().err.strip() == f"prvql: error: {message}"


def test_bench_reports_one_backbone_pass_per_frame(capsys) -> None:
    argv = ["bench", "--config", "tiny", "--frames", "7", "--queries-per-clip", "2", "--height", "32", "--width", "48"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["clip_frames"] for r in report["runs"]] == [7, 14]
    assert [r["backbone_images"] for r in report["runs"]] == [7 + 2, 14 + 2]
    assert report["checks"]["backbone_once"] is True
    assert all(r["searched_fps"] > 0 and r["peak_memory_mb"] >= 0 for r in report["runs"])


def test_stage_mean_reaches_the_model_and_is_checked(tiny_cfg: Config, tiny_model: nn.Module) -> None:
    """inference.stage_mean scores with the mean of the stages' anchor logits, as the model's forward_embedded does;
    on a model without stages it is a one-line error."""
    decoded = random_frames(6, seed=9)
    query = crop_query("q", decoded, 6, tiny_cfg.model.input_size)
    full = build_predictor(tiny_cfg, tiny_model).predict(iter(decoded), query)
    tiny_cfg.inference.stage_mean = True
    mean = build_predictor(tiny_cfg, tiny_model).predict(iter(decoded), query)
    frames = prepare_frames(decoded, tiny_cfg.model.input_size, tiny_cfg.data.pad_value)[None]
    with torch.inference_mode():
        out = tiny_model(frames, query.image[None])
    logits = torch.stack([s["logits"] for s in out["stages"]])  # [K, 1, T, A]
    expected_full = torch.sigmoid(logits[-1].max(-1).values).flatten().numpy()
    expected_mean = torch.sigmoid(logits.mean(0).max(-1).values).flatten().numpy()
    np.testing.assert_allclose(full.scores, expected_full, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mean.scores, expected_mean, rtol=1e-4, atol=1e-5)
    assert not np.allclose(mean.scores, full.scores, atol=1e-4)
    with pytest.raises(PRVQLError, match="no refinement stages"):
        Predictor(FixedOutputModel((0, 0, 1, 1)), num_frames=4, input_size=16, pad_value=0.5, stage_mean=True)


def test_predict_resume_accepts_a_cache_from_before_a_key_removal(
    dataset: dict, tiny_weights: Path, monkeypatch
) -> None:
    """A cache whose meta.json predates the removal of inference.flip_tta / num_stages (prvql.config.REMOVED_KEYS)
    resumes when they held their neutral values (the scores were made as now), and is refused otherwise."""
    assert _predict(dataset, tiny_weights)[0] == 0
    meta_path = dataset["root"] / "pred.json.cache" / "meta.json"
    meta = json.loads(meta_path.read_text())
    for inference in (meta["fingerprint"]["inference"], meta["config"]["inference"]):
        inference.update(flip_tta=False, num_stages=0)
    meta_path.write_text(json.dumps(meta))
    calls = []
    original = Predictor._backbone
    monkeypatch.setattr(
        Predictor, "_backbone", lambda self, images: calls.append(len(images)) or original(self, images)
    )
    assert _predict(dataset, tiny_weights, "--resume")[0] == 0 and calls == []  # every score reused
    meta["fingerprint"]["inference"]["flip_tta"] = True  # scores of the mirrored view: not reusable
    meta_path.write_text(json.dumps(meta))
    assert _predict(dataset, tiny_weights, "--resume")[0] == 2


def test_predict_annotation_file_reports_what_it_wrote(dataset: dict, tiny_weights: Path) -> None:
    """The library call behind `prvql predict`: its result is what the command prints; bad input names the field."""
    from prvql.data.annotations import load_annotations
    from prvql.infer.challenge import PredictionRun, predict_annotation_file
    from prvql.infer.predictions import load_predictions

    output = dataset["root"] / "lib.json"
    done = predict_annotation_file(
        dataset["annotations"], dataset["clips"], output, weights=tiny_weights, device="cpu", progress=False
    )
    assert done == PredictionRun(output, predicted=3, valid=6, failed_clips=["clipC"])
    tracks = load_predictions(output, load_annotations(dataset["annotations"]))
    assert {key for key, track in tracks.items() if len(track)} == {"a1_1", "a1_2", "a3_1"}
    for kwargs, field in (({"max_clips": 0}, "max_clips"), ({"cache_dir": dataset["annotations"]}, "cache_dir")):
        with pytest.raises(PRVQLError) as error:
            predict_annotation_file(dataset["annotations"], dataset["clips"], dataset["root"] / "x.json", **kwargs)
        assert error.value.field == field and "--" not in str(error.value)
    assert not (dataset["root"] / "x.json").exists()
