"""Image files from users (query crops): any mode Pillow reads, to uint8 RGB, with a bound on their size.

Pillow's ``convert("RGB")`` is wrong for several modes: 16-bit grayscale (``I;16``, ``I``) is clipped at 255, so a
16-bit PNG comes out almost white; 32-bit float (``F``) likewise; and the alpha channel is simply dropped, showing
whatever colour transparent pixels happen to hold. :func:`to_rgb` scales 16-bit and float data to 8 bits and
composites transparent pixels over :data:`BACKGROUND` (mid-grey, the colour of the model's padding band).
The EXIF orientation of camera photographs is applied.

A file that claims more than :data:`MAX_PIXELS` pixels (a decompression bomb) is refused before it is decoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from prvql.errors import PRVQLError
from prvql.paths import check_input_file

MAX_PIXELS = 64_000_000  # 8000 x 8000; a query crop has no use for more
BACKGROUND = (128, 128, 128)  # behind transparent pixels
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_ALPHA = {"RGBA", "LA", "PA", "La", "RGBa"}


def to_rgb(image: Image.Image) -> np.ndarray:
    """uint8 [H, W, 3] RGB of a decoded image of any mode (see the module docstring)."""
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        values = np.asarray(image).astype(np.float64)
        gray = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)  # 0..65535 -> 0..255
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and values.max() <= 1.0:  # float images in [0, 1]
            values = values * 255.0
        gray = np.clip(np.round(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in _ALPHA or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return np.array(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.array(image.convert("RGB"))


def read_image(source: str | Path | BinaryIO, what: str = "image") -> np.ndarray:
    """uint8 [H, W, 3] RGB of an image file (a path or an open binary file).

    Raises:
        PRVQLError: missing file, a folder, not an image, truncated, or more than :data:`MAX_PIXELS` pixels; one
            line naming the file.
    """
    name = source if isinstance(source, (str, Path)) else getattr(source, "name", what)
    if isinstance(source, (str, Path)):
        check_input_file(source, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise PRVQLError(f"{name}: {width}x{height} pixels is more than the {MAX_PIXELS} a {what} may have")
                image.load()
                return to_rgb(ImageOps.exif_transpose(image))
    except PRVQLError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PRVQLError(f"{name}: refused, too many pixels ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types on hostile bytes; all mean "unreadable"
        raise PRVQLError(f"{name}: not a readable {what} ({type(exc).__name__}: {exc})") from None
