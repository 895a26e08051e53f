"""Geometric verification (SIFT + RANSAC) on generated textures: finds and boxes a pasted crop, leaves an
unrelated video alone, moves the track to the last sighting, and names a bad setting."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from prvql.config import GeometricConfig
from prvql.errors import ConfigError
from prvql.infer.geometric import FeatureMatcher, candidate_frames, refine_track, verify_track

H, W = 180, 320


def texture(seed: int, height: int, width: int) -> np.ndarray:
    """uint8 [h, w, 3] blurred noise: corners and blobs at many scales, so SIFT finds keypoints."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(image, (3, 3), 0)


def scene(seed: int, obj: np.ndarray | None, at: tuple[int, int], scale: float = 1.0) -> tuple[np.ndarray, list]:
    """A background frame with ``obj`` resized by ``scale`` pasted with its top-left at ``at``; (frame, xyxy)."""
    frame = texture(seed, H, W)
    if obj is None:
        return frame, []
    h, w = round(obj.shape[0] * scale), round(obj.shape[1] * scale)
    x, y = at
    frame[y : y + h, x : x + w] = cv2.resize(obj, (w, h), interpolation=cv2.INTER_LINEAR)
    return frame, [x, y, x + w, y + h]


def iou(a: np.ndarray, b: list) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix)


@pytest.fixture
def obj() -> np.ndarray:
    return texture(99, 72, 96)


def test_matcher_boxes_the_object_and_rejects_other_frames(obj: np.ndarray) -> None:
    matcher = FeatureMatcher(obj, ratio=0.75, min_inliers=10, max_scale=4.0, max_side=640)
    frame, truth = scene(1, obj, (150, 60), scale=1.3)
    inliers, box, colour, _ = matcher.match(frame)
    assert inliers >= 10 and box is not None
    assert iou(box, truth) > 0.9
    assert colour is not None and colour < 0.2  # the same pixels, resized
    other, _ = scene(2, None, (0, 0))
    assert matcher.match(other).box is None


def test_verify_moves_track_to_last_sighting_and_refines_boxes(obj: np.ndarray) -> None:
    # object in frames 2-4 (early) and 8-11 (the last sighting); the model's track sits on 5-6 with loose boxes
    made = [scene(10 + i, obj if (2 <= i <= 4 or 8 <= i <= 11) else None, (20 + 10 * i, 40)) for i in range(14)]
    frames = [f for f, _ in made]
    matcher = FeatureMatcher(obj, ratio=0.75, min_inliers=10, max_scale=4.0, max_side=640)
    model = (5, 6, np.array([[0.0, 0.0, W, H]] * 2))
    found = verify_track(matcher, lambda k: [frames[i] for i in k], 14, [9, 5, 3], model, max_track=100)
    assert found.verified
    assert (found.start, found.end) == (8, 11)
    for i in range(8, 12):
        assert iou(found.boxes[i - 8], made[i][1]) > 0.9
    assert found.best_inliers >= 10


def test_gap_is_bridged_with_interpolated_boxes(obj: np.ndarray) -> None:
    # frame 5 shows nothing (an occlusion) between sightings 2-4 and 6-8
    made = [scene(30 + i, obj if i in (2, 3, 4, 6, 7, 8) else None, (20 + 10 * i, 40)) for i in range(10)]
    frames = [f for f, _ in made]
    matcher = FeatureMatcher(obj, ratio=0.75, min_inliers=10, max_scale=4.0, max_side=640)
    model = (0, 0, np.zeros((1, 4)))
    read = lambda k: [frames[i] for i in k]  # noqa: E731
    bridged = verify_track(matcher, read, 10, [7], model, max_track=100, max_gap=1)
    assert (bridged.start, bridged.end) == (2, 8)
    np.testing.assert_allclose(bridged.boxes[3], (bridged.boxes[2] + bridged.boxes[4]) / 2)
    strict = verify_track(matcher, read, 10, [7], model, max_track=100, max_gap=0)
    assert (strict.start, strict.end) == (6, 8)


def test_nothing_verifies_keeps_the_model_track(obj: np.ndarray) -> None:
    frames = [scene(50 + i, None, (0, 0))[0] for i in range(6)]
    boxes = np.array([[1.0, 2.0, 30.0, 40.0]] * 2)
    smoothed = np.array([0.1, 0.5, 0.2, 0.1, 0.6, 0.3])
    found = refine_track(
        GeometricConfig(), obj, smoothed, np.array([1, 4]), (3, 4, boxes), lambda k: [frames[i] for i in k]
    )
    assert not found.verified
    assert (found.start, found.end) == (3, 4)
    np.testing.assert_array_equal(found.boxes, boxes)
    assert set(found.inliers) == {1, 4}  # both candidate peaks were tried


def test_candidates_are_the_highest_peaks_most_recent_first() -> None:
    smoothed = np.array([0.9, 0.1, 0.5, 0.1, 0.7, 0.1, 0.2])
    assert candidate_frames(smoothed, np.array([0, 2, 4, 6]), 3) == [4, 2, 0]


@pytest.mark.parametrize("key,value", [("candidates", 0), ("min_inliers", 3), ("ratio", 1.5), ("max_gap", -1)])
def test_bad_setting_names_its_key(obj: np.ndarray, key: str, value: float) -> None:
    cfg = GeometricConfig(**{key: value})
    with pytest.raises(ConfigError, match=f"inference.geometric.{key}"):
        refine_track(cfg, obj, np.zeros(3), np.array([0]), (0, 0, np.zeros((1, 4))), lambda k: [])


def test_a_bad_setting_is_refused_before_any_search(tiny_cfg, tmp_path) -> None:  # noqa: ANN001
    from prvql.data.video import write_video
    from prvql.infer.locate import Query, locate_video

    video = tmp_path / "v.mp4"
    write_video(video, np.zeros((6, 64, 64, 3), np.uint8), fps=5.0)
    tiny_cfg.inference.geometric.source_tolerance = -1.0
    no_model = object()  # a search would fail on it with another error
    with pytest.raises(ConfigError, match="inference.geometric.source_tolerance"):
        query = Query(5, "before", (0, 0, 9, 9))
        locate_video(tiny_cfg, no_model, torch.device("cpu"), video, query, tmp_path / "o", name="v")
    assert not (tmp_path / "o").exists()


def test_apply_geometric_moves_the_located_track(obj: np.ndarray, tiny_cfg) -> None:  # noqa: ANN001
    from prvql.infer.locate import LocateResult, apply_geometric
    from prvql.infer.postprocess import PostProcessor

    made = [scene(70 + i, obj if 6 <= i <= 8 else None, (30 + 10 * i, 50)) for i in range(10)]
    frames = [f for f, _ in made]
    scores = np.array([0.1, 0.9, 0.8, 0.1, 0.1, 0.1, 0.3, 0.4, 0.3, 0.1], dtype=np.float32)  # the model peaks on 1
    boxes = np.tile(np.array([0.0, 0.0, 50.0, 50.0], dtype=np.float32), (10, 1))
    track, window = PostProcessor()(scores, boxes)
    assert (window.start, window.end) == (1, 2)
    query_image, query_box = scene(99, obj, (100, 40))
    result = LocateResult(scores, boxes, track, window, (H, W), query_image, tuple(float(v) for v in query_box))
    tiny_cfg.inference.geometric.enabled = True
    moved = apply_geometric(tiny_cfg, result, lambda k: [frames[i] for i in k])
    assert moved.geometric is not None and moved.geometric.verified
    assert moved.track.extent == (6, 8) == (moved.window.start, moved.window.end)
    assert 6 <= moved.window.peak <= 8
    for i in range(6, 9):
        assert iou(moved.track.boxes[i - 6], made[i][1]) > 0.9
    np.testing.assert_array_equal(moved.scores, scores)  # the curve itself is left as the model gave it


def sightings(seed: int, runs: list[range], shade: dict[int, int] | None = None) -> list[tuple[np.ndarray, list]]:
    """12 frames: the object (test texture 99) moving right on the frames of ``runs``; ``shade``: frame -> grey
    levels added to the whole frame (other light)."""
    obj = texture(99, 72, 96)
    made = [scene(seed + i, obj if any(i in r for r in runs) else None, (20 + 10 * i, 40)) for i in range(12)]
    for i, delta in (shade or {}).items():
        made[i] = (np.clip(made[i][0].astype(np.int16) + delta, 0, 255).astype(np.uint8), made[i][1])
    return made


def crop_of(frame: np.ndarray, box: list, margin: int = 6) -> np.ndarray:
    """The pixels of ``box`` widened by ``margin`` (some background, as a user's crop has)."""
    x1, y1, x2, y2 = box
    return frame[y1 - margin : y2 + margin, x1 - margin : x2 + margin].copy()


SMOOTHED = np.array([0.1, 0.2, 0.4, 0.5, 0.4, 0.2, 0.1, 0.2, 0.6, 0.9, 0.6, 0.1])  # the model prefers 8-10
PEAKS = np.array([3, 9])


def test_the_crop_source_run_is_set_aside_for_another_sighting() -> None:
    made = sightings(200, [range(2, 5), range(8, 11)])
    frames = [f for f, _ in made]
    read = lambda k: [frames[i] for i in k]  # noqa: E731
    crop = crop_of(frames[9], made[9][1])  # a crop image cut from frame 9 of the searched video
    model = (8, 10, np.array([[0.0, 0.0, W, H]] * 3))
    found = refine_track(GeometricConfig(), crop, SMOOTHED, PEAKS, model, read, find_source=True)
    assert found.verified and (found.start, found.end) == (2, 4)  # the other sighting, not the crop's own
    assert found.crop_source_frame == 9 and found.crop_source_run == (8, 10)
    for i in range(2, 5):
        x1, y1, x2, y2 = made[i][1]
        assert iou(found.boxes[i - 2], [x1 - 6, y1 - 6, x2 + 6, y2 + 6]) > 0.9  # the crop's box (with its margin)
    assert found.best_inliers == max(found.inliers[i] for i in range(2, 5))  # the crop's run does not count
    known = refine_track(GeometricConfig(), crop, SMOOTHED, PEAKS, model, read, crop_frame=9)
    assert (known.start, known.end, known.crop_source_frame) == (2, 4, 9)  # a box drawn on searched frame 9
    kept = refine_track(GeometricConfig(skip_crop_source=False), crop, SMOOTHED, PEAKS, model, read, find_source=True)
    assert (kept.start, kept.end, kept.crop_source_frame) == (8, 10, None)


def test_only_the_crop_source_verifies_keeps_the_model_track() -> None:
    made = sightings(230, [range(8, 11)])
    frames = [f for f, _ in made]
    crop = crop_of(frames[9], made[9][1])
    model = (8, 10, np.array([[1.0, 2.0, 30.0, 40.0]] * 3))
    found = refine_track(
        GeometricConfig(), crop, SMOOTHED, PEAKS, model, lambda k: [frames[i] for i in k], find_source=True
    )
    assert not found.verified and (found.start, found.end) == (8, 10)
    np.testing.assert_array_equal(found.boxes, model[2])
    assert found.crop_source_frame == 9 and found.best_inliers == 0
    assert found.colour_distance is not None  # measured on the model's box at its peak


def test_another_light_is_not_the_crop_source() -> None:
    # frame 9 is the crop's frame, seen again on frame 9 of a second video with other light: not its source
    made = sightings(260, [range(8, 11)])
    crop = crop_of(made[9][0], made[9][1])
    other = sightings(260, [range(8, 11)], shade={i: 12 for i in range(12)})
    frames = [f for f, _ in other]
    model = (8, 10, np.array([[0.0, 0.0, W, H]] * 3))
    found = refine_track(
        GeometricConfig(), crop, SMOOTHED, PEAKS, model, lambda k: [frames[i] for i in k], find_source=True
    )
    assert found.verified and (found.start, found.end) == (8, 10) and found.crop_source_frame is None


def test_a_recoloured_look_alike_is_far_in_colour(obj: np.ndarray) -> None:
    grey = obj.mean(axis=2, keepdims=True)
    orange = (grey * [1.0, 0.55, 0.2]).astype(np.uint8)
    obj, blue = orange, (grey * [0.2, 0.55, 1.0]).astype(np.uint8)  # the same pattern, other hues
    frame, _ = scene(290, obj, (100, 50))
    recoloured, _ = scene(290, blue, (100, 50))
    matcher = FeatureMatcher(obj, ratio=0.75, min_inliers=10, max_scale=4.0, max_side=640)
    same, swapped = matcher.match(frame), matcher.match(recoloured)
    assert same.box is not None and swapped.box is not None  # SIFT sees grey levels: both verify
    assert swapped.colour > same.colour + 0.2
    strict = FeatureMatcher(obj, ratio=0.75, min_inliers=10, max_scale=4.0, max_side=640, max_colour=same.colour + 0.1)
    assert strict.match(frame).box is not None and strict.match(recoloured).box is None
