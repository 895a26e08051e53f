"""Procedurally generated objects for synthetic training episodes.

Every photograph-cut object shares its look with a handful of others (they come from eight pictures), so a model
can learn those pictures instead of learning to match a query crop. A generated object is drawn from a seed alone:
a base (flat colour, gradient, stripes, smooth noise or a tinted crop of a training-pool texture) with shapes,
strokes and characters in random colours on top. Each seed gives a new identity; no held-out picture is used.
"""

from __future__ import annotations

import string
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

GENERATED_PREFIX = "generated_"  # picture name "generated_<seed>" (see prvql.synth.imagery.load_picture)
SIDE_RANGE = (64, 200)  # pixels, each side
SHAPES_RANGE = (2, 10)  # shapes drawn over the base
# Grey training-pool pictures used as tinted base textures (never a held-out picture).
BASE_TEXTURES = ("brick", "checkerboard", "microaneurysms", "camera", "coins")


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random colour: saturated half the time, any RGB otherwise."""
    if rng.random() < 0.5:
        hue, saturation, value = int(rng.integers(256)), int(rng.integers(150, 256)), int(rng.integers(80, 256))
        hsv = Image.new("HSV", (1, 1), (hue, saturation, value))
        return tuple(int(v) for v in hsv.convert("RGB").getpixel((0, 0)))
    return tuple(int(v) for v in rng.integers(0, 256, size=3))


def _base(
    rng: np.random.Generator, width: int, height: int, texture: Callable[[str], np.ndarray] | None
) -> Image.Image:
    """The object's background layer, RGB ``width x height``."""
    kind = int(rng.integers(5 if texture is not None else 4))
    if kind == 0:
        return Image.new("RGB", (width, height), _colour(rng))
    if kind in (1, 2):  # gradient, or stripes of two colours along a random direction
        a, b = np.asarray(_colour(rng), np.float32), np.asarray(_colour(rng), np.float32)
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        t = (xx * np.cos(angle) + yy * np.sin(angle)) / max(width, height)
        if kind == 2:
            t = (np.sin(t * np.pi * rng.uniform(3, 12)) > 0).astype(np.float32)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        return Image.fromarray((a + (b - a) * t[..., None]).astype(np.uint8))
    if kind == 3:  # smooth coloured noise
        cells = int(rng.integers(2, 9))
        grid = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        return Image.fromarray(grid).resize((width, height), Image.BICUBIC)
    assert texture is not None
    picture = texture(BASE_TEXTURES[int(rng.integers(len(BASE_TEXTURES)))])[..., :3]
    h, w = min(height, picture.shape[0]), min(width, picture.shape[1])
    top, left = int(rng.integers(picture.shape[0] - h + 1)), int(rng.integers(picture.shape[1] - w + 1))
    grey = picture[top : top + h, left : left + w].astype(np.float32).mean(axis=2, keepdims=True) / 255
    tint = np.asarray(_colour(rng), np.float32) / 255
    tinted = Image.fromarray((grey * tint * 255 + (1 - tint) * 255 * grey * 0.3).clip(0, 255).astype(np.uint8))
    return tinted.resize((width, height), Image.BILINEAR)


def _draw_shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    """One random ellipse, rectangle, polygon, stroke, pie slice or run of characters."""
    kind = int(rng.integers(6))
    fill = _colour(rng)
    x0, x1 = sorted(float(v) for v in rng.uniform(-0.1, 1.1, 2) * width)
    y0, y1 = sorted(float(v) for v in rng.uniform(-0.1, 1.1, 2) * height)
    box = (x0, y0, max(x1, x0 + 3), max(y1, y0 + 3))
    if kind == 0:
        draw.ellipse(box, fill=fill, outline=_colour(rng) if rng.random() < 0.5 else None, width=2)
    elif kind == 1:
        draw.rounded_rectangle(box, radius=float(rng.uniform(0, 12)), fill=fill)
    elif kind == 2:
        corners = int(rng.integers(3, 8))
        draw.polygon([(float(rng.uniform(0, width)), float(rng.uniform(0, height))) for _ in range(corners)], fill=fill)
    elif kind == 3:
        points = [(float(rng.uniform(0, width)), float(rng.uniform(0, height))) for _ in range(int(rng.integers(2, 5)))]
        draw.line(points, fill=fill, width=int(rng.integers(2, max(3, min(width, height) // 8))))
    elif kind == 4:
        start = float(rng.uniform(0, 360))
        draw.pieslice(box, start, start + float(rng.uniform(40, 300)), fill=fill)
    else:
        size = int(rng.integers(10, max(11, min(width, height) // 2)))
        text = "".join(rng.choice(list(string.ascii_letters + string.digits), size=int(rng.integers(1, 5))))
        draw.text((x0, y0), text, fill=fill, font=ImageFont.load_default(size=size))


def _draw_size(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) of a generated object: the first draw of its seed's generator."""
    width, height = (int(v) for v in rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1, size=2))
    return height, width


def generated_size(seed: int) -> tuple[int, int]:
    """(height, width) of the generated object of ``seed``, without drawing it."""
    return _draw_size(np.random.default_rng(seed))


def generated_picture(seed: int, texture: Callable[[str], np.ndarray] | None = None) -> np.ndarray:
    """The generated object of ``seed`` as uint8 [H, W, 3] (H, W in :data:`SIDE_RANGE`, as :func:`generated_size`
    says); the same seed gives the same picture. ``texture(name)`` loads a picture of :data:`BASE_TEXTURES` (None: no
    texture bases)."""
    rng = np.random.default_rng(seed)
    height, width = _draw_size(rng)
    image = _base(rng, width, height, texture)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(SHAPES_RANGE[0], SHAPES_RANGE[1] + 1))):
        _draw_shape(draw, rng, width, height)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.5))))
    return np.asarray(image)
