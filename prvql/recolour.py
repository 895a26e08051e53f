"""Recoloured look-alikes: the synthetic generator's look-alike distractors and training's recoloured negatives
(``loss.recoloured_negatives``) both use these."""

from __future__ import annotations

import numpy as np
from PIL import Image


def recolour(image: Image.Image, shift: int, tint: tuple[float, float, float]) -> Image.Image:
    """A look-alike of an RGBA image: hue rotated by ``shift`` (0..255), then multiplied by ``tint`` (so grey
    objects change colour too); alpha kept."""
    hsv = np.asarray(image.convert("RGB").convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + shift) % 256
    rgb = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB")).astype(np.float32) * np.asarray(tint, np.float32)
    out = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    out.putalpha(image.getchannel("A"))
    return out


def look_alike(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The generator's recoloured look-alike of an RGBA image: :func:`recolour` with a random hue shift (64-191 of
    256) and tint (each channel uniform in [0.3, 1], the brightest scaled to 1)."""
    tint = rng.uniform(0.3, 1.0, size=3)
    return recolour(image, int(rng.integers(64, 192)), tuple(tint / tint.max()))
