"""Camera and sensor effects of the synthetic episodes: lighting, motion blur, defocus, JPEG artefacts.

Real egocentric footage is never a clean paste: the exposure and white balance drift as the wearer turns, fast head
turns smear the frame along the motion, the camera hunts for focus, and the stream is compressed. One
:class:`Effects` holds the parameters of one episode (drawn once by :func:`make_effects`); :func:`apply_effects`
applies them to the frame at scene time ``s`` (canonical frames), given the camera's motion at that time. The
pixel work is done by PIL (Gaussian blur, JPEG codec) and scipy (the motion-blur convolution).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

MAX_BLUR_LENGTH = 21  # pixels: longest motion-blur streak (odd, the kernel side)
MIN_BLUR_LENGTH = 1.5  # pixels: shorter streaks are not drawn


@dataclass(frozen=True)
class Effects:
    """Per-episode effect parameters (scene times in canonical frames).

    Attributes:
        gain: (amplitude, angular frequency, phase) of the global brightness, gain = 1 + a sin(w s + p).
        tint: per-channel (R, G, B) amplitude of the white-balance drift, channel gain = 1 + t_c sin(w s + p_c).
        tint_motion: (angular frequency, phase R, phase G, phase B) of the white-balance drift.
        defocus: (start, end, peak Gaussian radius in pixels) intervals where the camera is out of focus.
        exposure: motion-blur exposure in canonical frames (0 = no motion blur).
        jpeg_quality: JPEG quality every frame is re-encoded at (0 = none).
    """

    gain: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tint: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tint_motion: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    defocus: tuple[tuple[float, float, float], ...] = ()
    exposure: float = 0.0
    jpeg_quality: int = 0


def make_effects(
    rng: np.random.Generator,
    duration: float,
    lighting: bool,
    motion_blur: bool,
    defocus: bool,
    jpeg: bool,
) -> Effects:
    """Random effects for ``duration`` canonical frames; each kind can be switched off."""
    gain = (float(rng.uniform(0.05, 0.35)), float(rng.uniform(0.005, 0.03)), float(rng.uniform(0, 2 * math.pi)))
    tint = tuple(float(v) for v in rng.uniform(0.0, 0.15, size=3))
    tint_motion = (float(rng.uniform(0.003, 0.02)), *(float(v) for v in rng.uniform(0, 2 * math.pi, size=3)))
    blurs = []
    for _ in range(int(rng.integers(0, 4))):
        start = float(rng.uniform(0, duration))
        blurs.append((start, start + float(rng.uniform(10, 60)), float(rng.uniform(1.0, 3.0))))
    exposure = float(rng.uniform(0.5, 1.5))
    quality = int(rng.integers(15, 70)) if rng.random() < 0.6 else 0
    off = Effects()
    return Effects(
        gain=gain if lighting else off.gain,
        tint=tint if lighting else off.tint,  # type: ignore[arg-type]
        tint_motion=tint_motion if lighting else off.tint_motion,
        defocus=tuple(blurs) if defocus else (),
        exposure=exposure if motion_blur else 0.0,
        jpeg_quality=quality if jpeg else 0,
    )


def motion_kernel(dx: float, dy: float) -> np.ndarray | None:
    """Normalised line kernel float32 [k, k] of a streak of (dx, dy) pixels, or None when shorter than 1.5 px."""
    length = math.hypot(dx, dy)
    if length < MIN_BLUR_LENGTH:
        return None
    scale = min(1.0, (MAX_BLUR_LENGTH - 1) / length)
    dx, dy = dx * scale, dy * scale
    side = min(MAX_BLUR_LENGTH, 2 * math.ceil(max(abs(dx), abs(dy)) / 2) + 1)
    c = side // 2
    canvas = Image.new("L", (side, side), 0)
    ImageDraw.Draw(canvas).line((c - dx / 2, c - dy / 2, c + dx / 2, c + dy / 2), fill=255, width=1)
    kernel = np.asarray(canvas, dtype=np.float32)
    return kernel / kernel.sum()


def apply_effects(frame: Image.Image, effects: Effects, s: float, motion: tuple[float, float]) -> Image.Image:
    """``frame`` (RGB) as the camera records it at scene time ``s``.

    Args:
        frame: the composited RGB frame.
        effects: the episode's parameters.
        s: scene time (canonical frames).
        motion: (dx, dy) pixels the image content moves per canonical frame (from the camera path).
    """
    kernel = motion_kernel(motion[0] * effects.exposure, motion[1] * effects.exposure) if effects.exposure else None
    if kernel is not None:
        blurred = ndimage.convolve(np.asarray(frame, dtype=np.float32), kernel[:, :, None], mode="nearest")
        frame = Image.fromarray(np.clip(blurred + 0.5, 0, 255).astype(np.uint8))
    for start, end, radius in effects.defocus:
        if start <= s < end:
            r = radius * math.sin(math.pi * (s - start) / (end - start))
            if r > 0.3:
                frame = frame.filter(ImageFilter.GaussianBlur(r))
    a, w, p = effects.gain
    if a or any(effects.tint):
        freq, *phases = effects.tint_motion
        light = 1 + a * math.sin(w * s + p)
        gains = np.array([light * (1 + t * math.sin(freq * s + q)) for t, q in zip(effects.tint, phases, strict=True)])
        lit = np.asarray(frame, dtype=np.float32) * gains.astype(np.float32)
        frame = Image.fromarray(np.clip(lit + 0.5, 0, 255).astype(np.uint8))
    if effects.jpeg_quality:
        buffer = io.BytesIO()
        frame.save(buffer, "JPEG", quality=effects.jpeg_quality)
        frame = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return frame
