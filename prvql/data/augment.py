"""Training augmentation of one window, with ``torchvision.transforms.v2`` moving the boxes with the pixels.

Applied to the padded square input (as the released code does), with ONE set of random parameters for all frames
of the window: colour jitter, horizontal flip, random resized crop back to the input size. A frame whose box leaves
the crop becomes a negative frame (occurrence false, box zeroed).

:class:`QueryAugment` (``data.query_augment``; not in the released code, whose ``aug_query`` is off) changes the
query crop on its own: colour, perspective, rotation, scale and blur, so that the sighting the visual crop was cut
from is not matched pixel for pixel and later sightings under another view are learnt as well.

:func:`recolour_box` makes the recoloured query of ``loss.recoloured_negatives``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from prvql.recolour import look_alike


class WindowAugment:
    """Window-consistent photometric and geometric augmentation.

    Args:
        size: side S of the square frames.
        color_jitter: (brightness, contrast, saturation) strengths; hue is left alone.
        flip_prob: probability of a horizontal flip.
        crop_scale: area fraction range of the random resized crop.
        crop_ratio: aspect-ratio range of the random resized crop.
        min_box_side: a box narrower or shorter than this (pixels of S) after the crop counts as gone.
    """

    def __init__(
        self,
        size: int,
        color_jitter: tuple[float, float, float],
        flip_prob: float,
        crop_scale: tuple[float, float],
        crop_ratio: tuple[float, float],
        min_box_side: float = 1.0,
    ) -> None:
        self.size = size
        self.min_box_side = min_box_side
        brightness, contrast, saturation = color_jitter
        self.transform = v2.Compose(
            [
                v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation),
                v2.RandomHorizontalFlip(p=flip_prob),
                v2.RandomResizedCrop((size, size), scale=crop_scale, ratio=crop_ratio, antialias=True),
            ]
        )

    def __call__(self, frames: Tensor, boxes: Tensor, occurrence: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Augment one window (randomness from torch's global generator).

        Args:
            frames: float [T, 3, S, S] in [0, 1] (padded square, before normalisation).
            boxes: float [T, 4] normalised xyxy (ignored where ``occurrence`` is false).
            occurrence: bool [T].

        Returns:
            frames float [T, 3, S, S] in [0, 1], boxes [T, 4] normalised xyxy (zeros where absent), occurrence [T].
        """
        video = tv_tensors.Video(frames)
        pixel_boxes = tv_tensors.BoundingBoxes(
            boxes * self.size, format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=(self.size, self.size)
        )
        video, pixel_boxes = self.transform(video, pixel_boxes)
        out_boxes = pixel_boxes.as_subclass(Tensor).clamp(0, self.size)
        sides = out_boxes[:, 2:] - out_boxes[:, :2]
        visible = (sides >= self.min_box_side).all(dim=1)
        occurrence = occurrence & visible
        out_boxes = torch.where(occurrence[:, None], out_boxes / self.size, torch.zeros_like(out_boxes))
        return video.as_subclass(Tensor).clamp(0, 1), out_boxes, occurrence


class QueryAugment:
    """Augmentation of the query crop alone, independent of the window's.

    Args:
        color_jitter: (brightness, contrast, saturation) strengths.
        degrees: largest in-plane rotation, degrees either way.
        perspective: ``distortion_scale`` of the random perspective warp (applied with probability 1/2).
        scale: zoom range of the crop's content.
        blur_prob: probability of a Gaussian blur.
        blur_sigma: range of the blur's standard deviation, pixels of the S x S crop.
        fill: value of the pixels a warp uncovers, in [0, 1] image units (``data.pad_value``).
    """

    def __init__(
        self,
        color_jitter: tuple[float, float, float],
        degrees: float,
        perspective: float,
        scale: tuple[float, float],
        blur_prob: float,
        blur_sigma: tuple[float, float] = (0.1, 1.5),
        fill: float = 0.5,
    ) -> None:
        brightness, contrast, saturation = color_jitter
        kernel = 2 * math.ceil(3 * blur_sigma[1]) + 1
        self.transform = v2.Compose(
            [
                v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation),
                v2.RandomPerspective(distortion_scale=perspective, p=0.5, fill=fill),
                v2.RandomAffine(degrees=degrees, scale=scale, fill=fill),
                v2.RandomApply([v2.GaussianBlur(kernel, sigma=blur_sigma)], p=blur_prob),
            ]
        )

    def __call__(self, query: Tensor) -> Tensor:
        """float [3, S, S] in [0, 1] -> float [3, S, S] in [0, 1] (randomness from torch's global generator)."""
        return self.transform(query).clamp(0, 1)


def recolour_box(frame: np.ndarray, box_xyxy: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """A copy of ``frame`` (uint8 [H, W, 3]) whose box holds a recoloured look-alike of its content: the synthetic
    generator's recolouring of its look-alike distractors (:func:`prvql.recolour.look_alike`).

    Args:
        frame: uint8 [H, W, 3] RGB.
        box_xyxy: the box in pixels of ``frame`` (widened to whole pixels, clipped to the frame).
        rng: draws the hue shift and the tint.
    """
    height, width = frame.shape[:2]
    x1, y1 = max(0, math.floor(box_xyxy[0])), max(0, math.floor(box_xyxy[1]))
    x2, y2 = min(width, math.ceil(box_xyxy[2])), min(height, math.ceil(box_xyxy[3]))
    out = np.array(frame, dtype=np.uint8, copy=True)
    if x2 > x1 and y2 > y1:
        region = Image.fromarray(out[y1:y2, x1:x2]).convert("RGBA")
        out[y1:y2, x1:x2] = np.asarray(look_alike(region, rng))[..., :3]
    return out
