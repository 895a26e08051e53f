"""Query images of every mode become the right uint8 RGB (prvql.data.images); oversized ones are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prvql.data.images import BACKGROUND, MAX_PIXELS, read_image
from prvql.errors import PRVQLError


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    """A 16-bit PNG used to come out 99.6% white (values above 255 clipped)."""
    ramp = np.linspace(0, 65535, 40 * 50).reshape(40, 50).astype(np.uint16)
    path = _save(Image.fromarray(ramp), tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I")
    rgb = read_image(path)
    assert rgb.shape == (40, 50, 3) and rgb.dtype == np.uint8
    np.testing.assert_allclose(rgb[..., 0].astype(float), ramp / 257.0, atol=0.51)
    assert (rgb[..., 0] == rgb[..., 2]).all() and (rgb == 255).mean() < 0.01


def test_float_images_in_unit_range_are_scaled(tmp_path: Path) -> None:
    values = np.linspace(0, 1, 30 * 20, dtype=np.float32).reshape(30, 20)
    path = _save(Image.fromarray(values, mode="F"), tmp_path / "f.tiff")
    rgb = read_image(path)
    np.testing.assert_allclose(rgb[..., 1].astype(float), values * 255, atol=0.51)


def test_grayscale_and_one_bit_are_replicated(tmp_path: Path) -> None:
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = read_image(_save(Image.fromarray(gray), tmp_path / "l.png"))
    assert (rgb == gray[..., None]).all()
    bits = Image.fromarray(gray > 127).convert("1")
    rgb = read_image(_save(bits, tmp_path / "1.png"))
    assert set(np.unique(rgb)) == {0, 255} and (rgb[..., 0] == np.where(gray > 127, 255, 0)).all()


def test_palette_with_a_transparent_entry_shows_the_background(tmp_path: Path) -> None:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(0, (0, 0, 4, 8))  # left half: palette entry 0, transparent
    rgb = read_image(_save(image, tmp_path / "p.png", transparency=0))
    assert (rgb[:, :4] == BACKGROUND).all() and (rgb[:, 4:] == (0, 0, 255)).all()
    opaque = read_image(_save(image, tmp_path / "p_opaque.png"))
    assert (opaque[:, :4] == (255, 0, 0)).all()


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_not_dropped(tmp_path: Path, mode: str) -> None:
    """Fully transparent pixels take the background whatever colour they store; opaque ones keep theirs."""
    rgba = np.zeros((6, 6, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white colour ...
    rgba[:3, :, 3] = 0  # ... invisible in the top half
    rgba[3:, :, 3] = 255
    image = Image.fromarray(rgba, mode="RGBA").convert(mode)
    rgb = read_image(_save(image, tmp_path / f"{mode}.png"))
    assert (rgb[:3] == BACKGROUND).all() and (rgb[3:] == 255).all()


def test_cmyk_and_exif_rotation(tmp_path: Path) -> None:
    image = Image.new("RGB", (20, 10), (200, 30, 10)).convert("CMYK")
    rgb = read_image(_save(image, tmp_path / "c.jpg", quality=95))
    assert np.abs(rgb.astype(int) - (200, 30, 10)).max() < 12
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    rotated = read_image(_save(Image.new("RGB", (20, 10), (0, 0, 0)), tmp_path / "r.jpg", exif=exif))
    assert rotated.shape == (20, 10, 3)


def test_more_pixels_than_allowed_are_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    path = _save(Image.new("RGB", (40, 30)), tmp_path / "big.png")
    monkeypatch.setattr("prvql.data.images.MAX_PIXELS", 1000)
    with pytest.raises(PRVQLError, match=r"big\.png: 40x30 pixels"):
        read_image(path)
    assert MAX_PIXELS >= 4096 * 4096
