"""Model-input transforms keep boxes on their objects through pad, resize, flip and crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prvql.boxes import denormalize_boxes, normalize_boxes
from prvql.data.augment import WindowAugment
from prvql.data.transforms import IMAGENET_MEAN, IMAGENET_STD, pad_resize, prepare_frames, prepare_query

RED = (230, 20, 20)
S = 64


def square_frame(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Grey-noise frame with a red rectangle filling ``box`` (x1, y1, x2, y2)."""
    rng = np.random.default_rng(0)
    frame = rng.integers(90, 160, size=(height, width, 3), dtype=np.uint8)
    x1, y1, x2, y2 = box
    frame[y1:y2, x1:x2] = RED
    return frame


def red_mask(images: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] in [0, 1] -> bool [..., H, W] where the pixel is (mostly) red."""
    r, g, b = images.unbind(-3)
    return (r > 0.6) & (g < 0.35) & (b < 0.35)


def mask_box(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return x * std + mean


@pytest.mark.parametrize(("height", "width"), [(90, 160), (160, 90), (100, 100)])
def test_pad_resize_keeps_the_box_on_the_object(height: int, width: int) -> None:
    box = (20, 30, 60, 70)
    frame = square_frame(height, width, box)
    out = pad_resize(frame[None], S, pad_value=0.5)
    assert out.shape == (1, 3, S, S) and out.dtype == torch.float32
    normalised = normalize_boxes(torch.tensor(box, dtype=torch.float32), height, width)
    expected = normalised * S
    found = mask_box(red_mask(out[0]))
    assert torch.allclose(found, expected, atol=1.5), (found, expected)
    # the padding band carries the pad value, and the box maps back to the original pixels
    if height != width:
        assert torch.allclose(out[0, :, 0, 0], torch.full((3,), 0.5))
    assert torch.allclose(denormalize_boxes(normalised, height, width), torch.tensor(box, dtype=torch.float32))


def test_prepare_frames_normalises_and_accepts_numpy_or_torch() -> None:
    frame = square_frame(48, 80, (10, 10, 30, 30))
    a = prepare_frames(frame[None], S, 0.5)
    b = prepare_frames(torch.from_numpy(frame[None].copy()), S, 0.5)
    assert torch.equal(a, b)
    assert torch.allclose(unnormalize(a[0])[:, 0, 0], torch.full((3,), 0.5), atol=1e-6)


def test_prepare_query_crops_the_squared_box() -> None:
    frame = square_frame(90, 160, (50, 20, 70, 60))  # 20 x 40 object -> 40 x 40 square crop
    query = prepare_query(frame, (50, 20, 70, 60), S)
    assert query.shape == (3, S, S)
    red = red_mask(unnormalize(query))
    columns = red.any(dim=0).nonzero().flatten()
    assert red.all(dim=0).sum() > 0 and red[S // 2].sum() == pytest.approx(S / 2, abs=2)  # centred half-width band
    assert columns.min() == pytest.approx(S / 4, abs=2) and columns.max() + 1 == pytest.approx(3 * S / 4, abs=2)


def augment(flip: float, scale: tuple[float, float]) -> WindowAugment:
    return WindowAugment(S, color_jitter=(0.4, 0.4, 0.3), flip_prob=flip, crop_scale=scale, crop_ratio=(0.8, 1.2))


def test_flip_and_crop_move_boxes_with_pixels() -> None:
    frames = np.stack([square_frame(90, 160, (20 + 10 * t, 30, 60 + 10 * t, 70)) for t in range(3)])
    x = pad_resize(frames, S, 0.5)
    boxes = torch.stack(
        [normalize_boxes(torch.tensor([20.0 + 10 * t, 30, 60 + 10 * t, 70]), 90, 160) for t in range(3)]
    )
    occurrence = torch.tensor([True, True, False])
    torch.manual_seed(0)
    out, out_boxes, out_occ = augment(flip=1.0, scale=(0.7, 1.0))(x, boxes, occurrence)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not out_occ[2] and torch.equal(out_boxes[2], torch.zeros(4))  # absent stays absent
    for t in range(2):
        assert out_occ[t]
        found = mask_box(red_mask(out[t])) / S
        assert torch.allclose(found, out_boxes[t], atol=2.5 / S), (t, found, out_boxes[t])
    assert out_boxes[1, 0] < out_boxes[0, 0]  # flipped: the object moving right now moves left


def test_box_leaving_the_crop_makes_the_frame_negative() -> None:
    frames = square_frame(100, 100, (0, 0, 12, 12))[None]
    x = pad_resize(frames, S, 0.5)
    box = normalize_boxes(torch.tensor([0.0, 0.0, 12.0, 12.0]), 100, 100)[None]
    seen = set()
    for seed in range(30):
        torch.manual_seed(seed)
        out, out_box, occ = augment(flip=0.5, scale=(0.1, 0.2))(x, box, torch.tensor([True]))
        r, g, b = out[0]
        visible_pixels = int(((r > g + 0.25) & (r > b + 0.25)).sum())  # reddish, edge pixels included
        assert bool(occ[0]) == (visible_pixels > 0), seed
        assert bool(occ[0]) or torch.equal(out_box[0], torch.zeros(4))
        seen.add(bool(occ[0]))
    assert seen == {True, False}


def test_colour_jitter_is_the_same_for_every_frame() -> None:
    frame = square_frame(64, 64, (5, 5, 20, 20))
    x = pad_resize(np.stack([frame, frame, frame]), S, 0.5)
    box = torch.tensor([[0.1, 0.1, 0.3, 0.3]]).repeat(3, 1)
    torch.manual_seed(3)
    out, _, _ = augment(flip=0.5, scale=(0.66, 1.0))(x, box, torch.ones(3, dtype=torch.bool))
    assert not torch.allclose(out[0], x[0])
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
