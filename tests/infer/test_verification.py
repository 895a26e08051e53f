"""Colour verification (inference.verification): descriptors, distances, re-scoring, the Predictor's wiring (the
fit of its coefficients: experiments/demo_model/tests/test_fit_verification.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.color import rgb2lab
from torch import nn

from prvql.boxes import normalize_boxes
from prvql.config import Config
from prvql.data.annotations import load_synthetic_occurrences
from prvql.data.transforms import normalize_image, prepare_frames
from prvql.errors import AnnotationError, PRVQLError
from prvql.infer.predictor import build_predictor
from prvql.infer.score_cache import FrameScores
from prvql.infer.verification import (
    colour_descriptors,
    colour_distance,
    query_descriptors,
    shrink_boxes,
    verified_scores,
)
from tests.infer.test_predictor import crop_query, random_frames


def two_colour_image(size: int, left: tuple[float, float, float], right: tuple[float, float, float]) -> torch.Tensor:
    """[3, S, S] normalised image: the left half one RGB colour, the right half another."""
    image = torch.empty(3, size, size)
    image[:, :, : size // 2] = torch.tensor(left)[:, None, None]
    image[:, :, size // 2 :] = torch.tensor(right)[:, None, None]
    return normalize_image(image)


def lab_of(rgb: tuple[float, float, float]) -> np.ndarray:
    return rgb2lab(np.array([[rgb]], np.float64))[0, 0]


def test_descriptors_describe_the_box_region_only() -> None:
    red, blue = (0.9, 0.1, 0.1), (0.1, 0.2, 0.9)
    images = two_colour_image(32, red, blue)[None].expand(2, 3, 32, 32)
    boxes = torch.tensor([[0.0, 0.0, 0.45, 1.0], [0.55, 0.2, 1.0, 0.8]])  # inside the red half, inside the blue half
    described = colour_descriptors(images, boxes, shrink=0.8, grid=4)
    np.testing.assert_allclose(described[0, :3], lab_of(red), atol=0.05)
    np.testing.assert_allclose(described[1, :3], lab_of(blue), atol=0.05)
    np.testing.assert_allclose(described[:, 3:], 0.0, atol=1e-3)  # uniform regions
    # a box across the border: both colours, a large spread in b (yellow-blue), where red and blue differ most
    across = colour_descriptors(images[:1], torch.tensor([[0.25, 0.0, 0.75, 1.0]]), shrink=1.0, grid=4)
    spread_b = abs(lab_of(red)[2] - lab_of(blue)[2]) / 2
    assert across[0, 5].item() == pytest.approx(spread_b, rel=0.05)
    # the query's descriptor is its central region's
    query = query_descriptors(two_colour_image(32, red, red)[None], shrink=0.6, grid=4)
    np.testing.assert_allclose(query[0, :3], lab_of(red), atol=0.05)


def test_shrink_boxes_keeps_the_centre() -> None:
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    assert shrink_boxes(boxes, 0.5).tolist() == [[15.0, 30.0, 25.0, 50.0]]


def test_colour_distance_weights_lightness() -> None:
    base = torch.tensor([50.0, 10.0, -10.0, 5.0, 2.0, 2.0])
    lighter = base + torch.tensor([10.0, 0, 0, 0, 0, 0])
    redder = base + torch.tensor([0, 10.0, 0, 0, 0, 0])
    assert colour_distance(lighter[None], base, 0.25).item() == pytest.approx(5.0)
    assert colour_distance(redder[None], base, 0.25).item() == pytest.approx(10.0)
    assert colour_distance(lighter[None], base, 0.0).item() == 0.0


def test_verified_scores() -> None:
    scores = np.array([0.1, 0.5, 0.9], np.float32)
    distances = np.array([0.0, 10.0, 20.0], np.float32)
    np.testing.assert_allclose(verified_scores(scores, distances, 1.0, 0.0, 0.0), scores, atol=1e-6)
    out = verified_scores(scores, distances, 2.0, -0.1, 0.5)
    z = 2.0 * np.log(scores / (1 - scores)) - 0.1 * distances + 0.5
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-z)), rtol=1e-5)
    assert out.dtype == np.float32
    # saturated scores stay finite
    assert np.isfinite(verified_scores(np.array([0.0, 1.0]), np.zeros(2), 1.0, -1.0, 0.0)).all()


def test_predictor_reports_the_distance_of_the_box_it_reports(tiny_cfg: Config, tiny_model: nn.Module) -> None:
    """With overlapping windows each frame's distance is that of its reported box,
    recomputed here from the model inputs; the scores are the plain ones re-scored with the configured coefficients."""
    decoded = random_frames(9, seed=4)
    query = crop_query("q", decoded, 9, tiny_cfg.model.input_size)
    tiny_cfg.inference.window_overlap = 3
    plain = build_predictor(tiny_cfg, tiny_model).predict(iter(decoded), query)
    assert plain.colour_distances is None
    v = tiny_cfg.inference.verification
    v.enabled, v.score_weight, v.colour_weight, v.bias = True, 1.5, -0.05, 0.3
    checked = build_predictor(tiny_cfg, tiny_model).predict(iter(decoded), query)
    np.testing.assert_array_equal(checked.boxes, plain.boxes)
    inputs = prepare_frames(decoded, tiny_cfg.model.input_size, tiny_cfg.data.pad_value)
    height, width = decoded.shape[1:3]
    boxes = normalize_boxes(torch.from_numpy(plain.boxes), height, width)
    expected = colour_distance(
        colour_descriptors(inputs, boxes, v.box_shrink, v.grid),
        query_descriptors(query.image[None], v.query_shrink, v.grid)[0],
        v.lightness_weight,
    ).numpy()
    np.testing.assert_allclose(checked.colour_distances, expected, rtol=1e-3, atol=1e-2)
    assert expected.std() > 0.1  # the boxes differ in colour, so the check can fail
    np.testing.assert_allclose(
        checked.scores, verified_scores(plain.scores, checked.colour_distances, 1.5, -0.05, 0.3), rtol=1e-5
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("box_shrink", 0.0, r"inference.verification.box_shrink: must be in \(0, 1\]"),
        ("query_shrink", 1.5, r"inference.verification.query_shrink: must be in \(0, 1\]"),
        ("grid", 0, r"inference.verification.grid: must be >= 1"),
        ("colour_weight", float("nan"), r"inference.verification.colour_weight: must be a finite number"),
        ("lightness_weight", -1.0, r"inference.verification.lightness_weight: must be >= 0"),
    ],
)
def test_bad_verification_settings_are_refused(
    tiny_cfg: Config, tiny_model: nn.Module, key: str, value: float, message: str
) -> None:
    tiny_cfg.inference.verification.enabled = True
    setattr(tiny_cfg.inference.verification, key, value)
    with pytest.raises(PRVQLError, match=message):
        build_predictor(tiny_cfg, tiny_model)


def test_frame_scores_keep_colour_distances(tmp_path: Path) -> None:
    result = FrameScores(np.array([0.2, 0.7], np.float32), np.zeros((2, 4), np.float32), np.array([3.0, 4.0]))
    result.save(tmp_path / "a.npz")
    loaded = FrameScores.load(tmp_path / "a.npz")
    np.testing.assert_array_equal(loaded.colour_distances, [3.0, 4.0])
    FrameScores(result.scores, result.boxes).save(tmp_path / "b.npz")
    assert FrameScores.load(tmp_path / "b.npz").colour_distances is None
    np.savez(tmp_path / "c.npz", scores=result.scores, boxes=result.boxes, colour_distances=np.zeros(3))
    with pytest.raises(PRVQLError, match=r"c.npz: colour_distances \(3,\) and scores \(2,\) do not match"):
        FrameScores.load(tmp_path / "c.npz")


def synthetic_annotations(path: Path, occurrences: dict[str, list]) -> Path:
    """A minimal VQ2D file with one clip and one valid query set per name, each with ``synthetic_occurrences``."""
    box = {"x": 4, "y": 4, "width": 8, "height": 8, "original_width": 32, "original_height": 32}
    query_sets = {
        name: {
            "is_valid": True,
            "query_frame": 19,
            "object_title": "cup",
            "visual_crop": {"frame_number": 1, **box},
            "response_track": [{"frame_number": 10, **box}],
            "synthetic_occurrences": frames,
        }
        for name, frames in occurrences.items()
    }
    annotation = {"annotation_uid": "a", "query_sets": query_sets}
    data = {
        "version": "1",
        "videos": [{"video_uid": "v", "clips": [{"clip_uid": "c", "annotations": [annotation]}]}],
    }
    path.write_text(json.dumps(data))
    return path


def test_load_synthetic_occurrences(tmp_path: Path) -> None:
    path = synthetic_annotations(tmp_path / "vq.json", {"1": [1, 2, 10], "2": [1, 10, 11]})
    assert load_synthetic_occurrences(path) == {"a_1": frozenset({1, 2, 10}), "a_2": frozenset({1, 10, 11})}
    bad = synthetic_annotations(tmp_path / "bad.json", {"1": [1, "2"]})
    with pytest.raises(AnnotationError, match=r"bad.json: a_1.synthetic_occurrences: expected a list of frame"):
        load_synthetic_occurrences(bad)
