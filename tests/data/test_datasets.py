"""Window samplers, the training dataset, collate -> Batch, and the JPEG frame cache."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from prvql.config import Config, load_config
from prvql.data.annotations import QueryRecord, load_annotations
from prvql.data.batch import Batch, collate
from prvql.data.datasets import VQ2DTrainDataset, build_train_dataset
from prvql.data.frames import FrameSource, cache_frames, frame_filename
from prvql.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from prvql.data.video import write_video
from prvql.data.windows import BalanceWindowSampler, RandomWindowSampler, positive_frames

N, H, W = 24, 48, 64  # clip frames and size; the annotations use a 2x larger "original" frame
T, S = 6, 32
RT = range(8, 12)


def square_at(j: int) -> tuple[int, int, int, int]:
    """Red square of clip frame j, in clip pixels (x1, y1, x2, y2)."""
    return 4 + 2 * j, 10, 20 + 2 * j, 26


def frame(j: int) -> np.ndarray:
    image = np.full((H, W, 3), 128, np.uint8)
    image[:, :, 1] = (np.arange(W) * 2).astype(np.uint8)  # a gradient, so the JPEG comparison is non-trivial
    x1, y1, x2, y2 = square_at(j)
    image[y1:y2, x1:x2] = (230, 20, 20)
    return image


def original_box(j: int) -> dict:
    x1, y1, x2, y2 = square_at(j)
    return {"frame_number": j, "x": 2 * x1, "y": 2 * y1, "width": 2 * (x2 - x1), "height": 2 * (y2 - y1),
            "original_width": 2 * W, "original_height": 2 * H}  # fmt: skip


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_video(root / "clips" / "clip-a.mp4", (frame(j) for j in range(N)), fps=5)
    qs = {"is_valid": True, "query_frame": 14, "object_title": "square", "visual_crop": original_box(2),
          "response_track": [original_box(j) for j in RT]}  # fmt: skip
    missing = qs | {"query_frame": 15}
    clips = [
        {"clip_uid": "clip-a", "video_start_frame": 0, "video_end_frame": 6 * (N - 1), "clip_fps": 5,
         "annotations": [{"annotation_uid": "a", "query_sets": {"1": qs}}]},
        {"clip_uid": "clip-missing", "clip_fps": 5,
         "annotations": [{"annotation_uid": "m", "query_sets": {"1": missing}}]},
    ]  # fmt: skip
    (root / "vq_train.json").write_text(json.dumps({"version": "1", "videos": [{"video_uid": "v", "clips": clips}]}))
    return root


def records(root: Path) -> list[QueryRecord]:
    return load_annotations(root / "vq_train.json").valid_records()


def record_with_track(frames: range, clip_frames: int) -> QueryRecord:
    track = tuple((f, (0.0, 0.0, 1.0, 1.0)) for f in frames)
    return QueryRecord("v", "c", "a", "1", True, clip_frames, "x", 10, 10, 0, (0, 0, 1, 1), track, clip_frames)


@pytest.mark.parametrize("sampler", [BalanceWindowSampler(), RandomWindowSampler()])
@pytest.mark.parametrize(
    ("track", "clip_frames"), [(range(3, 5), 100), (range(10, 80), 100), (range(95, 100), 100), (range(0, 2), 4)]
)
def test_samplers_include_a_positive(sampler, track: range, clip_frames: int) -> None:
    record = record_with_track(track, clip_frames)
    rng = np.random.default_rng(0)
    for _ in range(200):
        window = sampler(record, clip_frames, T, rng)
        assert window.shape == (T,) and window.min() >= 0 and window.max() < clip_frames
        assert np.all(np.diff(window) >= 0)
        assert set(window.tolist()) & set(track)


def test_balance_sampler_covers_a_short_track_entirely() -> None:
    record = record_with_track(range(40, 44), 100)
    rng = np.random.default_rng(1)
    starts = set()
    for _ in range(100):
        window = BalanceWindowSampler()(record, 100, T, rng)
        assert set(range(40, 44)) <= set(window.tolist())
        starts.add(int(window[0]))
    assert starts == {38, 39, 40}


def dataset(root: Path, frames_dir: Path | None = None) -> VQ2DTrainDataset:
    return VQ2DTrainDataset(
        records(root),
        FrameSource(root / "clips", frames_dir),
        T,
        S,
        BalanceWindowSampler(),
        None,
        pad_value=0.5,
        seed=0,
    )


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)


def test_sample_labels_match_the_pixels(data_root: Path) -> None:
    sample = dataset(data_root).load(records(data_root)[0], np.random.default_rng(5))
    assert sample.frames.shape == (T, 3, S, S) and sample.query.shape == (3, S, S)
    assert sample.key == "a_1"
    occurrence = sample.occurrence.tolist()
    assert any(occurrence) and not all(occurrence)
    for t in range(T):
        r, g, b = unnormalize(sample.frames[t])
        red = (r > 0.7) & (g < 0.3) & (b < 0.3)
        if occurrence[t]:
            ys, xs = torch.nonzero(red, as_tuple=True)
            found = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / S
            assert torch.allclose(found.float(), sample.boxes[t], atol=1.5 / S)
        else:
            assert torch.equal(sample.boxes[t], torch.zeros(4))
    r, g, b = unnormalize(sample.query)
    assert ((r > 0.7) & (g < 0.3)).float().mean() > 0.9  # the query is the (squared) square


def test_recoloured_query_changes_only_the_box_colours(data_root: Path) -> None:
    from prvql.data.augment import recolour_box

    image = frame(2)
    image[30:40, 60:70] = 128  # grey content changes too (the tint)
    box = (3.5, 9.2, 20.0, 26.0)  # widened to whole pixels: columns 3-19, rows 9-25
    out = recolour_box(image, box, np.random.default_rng(0))
    changed = np.any(out != image, axis=2)
    assert changed[10:26, 4:20].all() and not changed[:9].any() and not changed[:, 20:].any()
    assert not np.array_equal(out[12, 10], image[12, 10])  # the red square is another colour
    assert np.array_equal(out, recolour_box(image, box, np.random.default_rng(0)))  # rng-driven
    grey = recolour_box(image, (60, 30, 70, 40), np.random.default_rng(3))
    assert np.any(grey[30:40, 60:70] != 128)
    assert np.array_equal(recolour_box(image, (0, 0, 0, 0), np.random.default_rng(0)), image)  # empty box

    plain = dataset(data_root).load(records(data_root)[0], np.random.default_rng(5))
    assert plain.recoloured_query is None
    ds = VQ2DTrainDataset(
        records(data_root),
        FrameSource(data_root / "clips"),
        T,
        S,
        BalanceWindowSampler(),
        None,
        0.5,
        recoloured_queries=True,
    )
    sample = ds.load(records(data_root)[0], np.random.default_rng(5))
    torch.testing.assert_close(sample.frames, plain.frames)  # the window is drawn as before
    torch.testing.assert_close(sample.query, plain.query)
    assert sample.recoloured_query is not None and sample.recoloured_query.shape == (3, S, S)
    r, g, b = unnormalize(sample.recoloured_query)
    assert ((r > 0.7) & (g < 0.3) & (b < 0.3)).float().mean() < 0.5  # the red square is no longer red
    batch = collate([sample, sample])
    assert batch.recoloured_query is not None and batch.recoloured_query.shape == (2, 3, S, S)
    assert batch.to("cpu").recoloured_query is not None
    assert collate([sample, plain]).recoloured_query is None


def test_dataset_collates_into_a_batch(data_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds = dataset(data_root)
    assert len(ds) == 2
    with caplog.at_level(logging.WARNING):
        missing = ds[1]  # clip-missing has no mp4: reported, and another query is drawn
    assert "m_1" in caplog.text and "clip-missing.mp4" in caplog.text
    assert missing.key == "a_1"
    batch = collate([ds[0], missing])
    assert isinstance(batch, Batch) and len(batch) == 2
    assert batch.frames.shape == (2, T, 3, S, S) and batch.query.shape == (2, 3, S, S)
    assert batch.boxes.shape == (2, T, 4) and batch.occurrence.dtype == torch.bool
    assert batch.before_query.shape == (2, T) and batch.before_query.all()  # windows end before frame 14
    moved = batch.to("cpu")
    assert moved.keys == ["a_1", "a_1"] and torch.equal(moved.boxes, batch.boxes)
    if torch.cuda.is_available():
        assert batch.pin_memory().frames.is_pinned()
    ds.set_epoch(1)
    assert ds[0].key == "a_1"


def test_frame_cache_gives_the_same_pixels(data_root: Path, tmp_path: Path) -> None:
    report = cache_frames(records(data_root), data_root / "clips", tmp_path / "frames", window=T, progress=False)
    assert report.clips == 1 and list(report.failed) == ["clip-missing"]
    cached = sorted(p.name for p in (tmp_path / "frames" / "clip-a").glob("*.jpg"))
    assert cached[0] == frame_filename(RT[0] - T) and frame_filename(2) in cached
    indices = [3, 2, 5, 8, 9, 10, 11]
    from_cache = FrameSource(data_root / "clips", tmp_path / "frames").read("clip-a", indices)
    from_video = FrameSource(data_root / "clips").read("clip-a", indices)
    assert from_cache.shape == from_video.shape
    assert not np.array_equal(from_cache, from_video)  # really read from the JPEG files...
    assert np.abs(from_cache.astype(int) - from_video.astype(int)).mean() < 3  # ...within JPEG tolerance
    # the dataset reads the cache and labels do not change
    a = dataset(data_root, tmp_path / "frames").load(records(data_root)[0], np.random.default_rng(5))
    b = dataset(data_root).load(records(data_root)[0], np.random.default_rng(5))
    assert torch.equal(a.occurrence, b.occurrence) and torch.allclose(a.boxes, b.boxes)
    assert (a.frames - b.frames).abs().mean() < 0.1


def test_build_train_dataset_from_config(data_root: Path) -> None:
    base: Config = load_config("tiny")
    cfg = dataclasses.replace(base, data=dataclasses.replace(base.data, root=str(data_root)))
    train = build_train_dataset(cfg, "train")
    assert train.augment is not None and train.num_frames == cfg.model.num_frames
    sample = train[0]
    assert sample.frames.shape == (cfg.model.num_frames, 3, cfg.model.input_size, cfg.model.input_size)
    assert positive_frames(train.records[0]) == list(RT)


def test_query_augment_changes_only_the_query(data_root: Path) -> None:
    """data.query_augment: the window is the same as without it, the query is warped and recoloured, seeded."""
    from prvql.data.augment import QueryAugment
    from prvql.data.transforms import prepare_query

    record = records(data_root)[0]
    plain = dataset(data_root)
    augment = QueryAugment((0.4, 0.4, 0.3), degrees=30.0, perspective=0.5, scale=(0.6, 0.8), blur_prob=0.5)
    augmented = VQ2DTrainDataset(
        [record],
        FrameSource(data_root / "clips"),
        T,
        S,
        BalanceWindowSampler(),
        None,
        0.5,
        query_augment=augment,
        seed=0,
    )
    a = plain.load(record, np.random.default_rng(5))
    b = augmented.load(record, np.random.default_rng(5))
    assert torch.equal(a.frames, b.frames) and torch.equal(a.boxes, b.boxes)
    crop_frame = FrameSource(data_root / "clips").read("clip-a", [record.visual_crop_frame])[0]
    crop = torch.tensor(record.visual_crop_box) / 2  # the annotations use a 2x larger original frame
    assert torch.allclose(a.query, prepare_query(crop_frame, crop, S), atol=1e-6)  # off: the plain query
    assert (a.query - b.query).abs().mean() > 0.1
    # zoomed out to 0.6-0.8 of its size: the red square fills at most 0.8^2 of the query, and its centre stays red
    red = [(r > g + 0.2).float() for r, g, _ in (unnormalize(a.query), unnormalize(b.query))]
    assert red[0].mean() > 0.9 and 0.2 < red[1].mean() < 0.7 and red[1][S // 2, S // 2] == 1
    c = augmented.load(record, np.random.default_rng(5))
    assert torch.equal(b.query, c.query)  # the same generator state, the same query
    d = augmented.load(record, np.random.default_rng(6))
    assert not torch.equal(b.query, d.query)


def test_query_augment_keeps_range_and_size() -> None:
    from prvql.data.augment import QueryAugment

    torch.manual_seed(0)
    image = torch.rand(3, S, S)
    out = QueryAugment((0.4, 0.4, 0.3), 15.0, 0.3, (0.8, 1.25), 1.0)(image)
    assert out.shape == image.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, image, atol=0.05)


def test_build_train_dataset_query_augment_only_for_training(data_root: Path) -> None:
    base: Config = load_config("tiny", ["data.query_augment=true", "data.val_annotations=vq_train.json"])
    cfg = dataclasses.replace(base, data=dataclasses.replace(base.data, root=str(data_root)))
    assert build_train_dataset(cfg, "train").query_augment is not None
    assert build_train_dataset(cfg, "val").query_augment is None
    assert build_train_dataset(load_config("tiny", [f"data.root={data_root}"]), "train").query_augment is None
