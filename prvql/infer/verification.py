"""Colour verification: re-score each frame by how well the colours in its box match the visual crop.

Not in the paper (docs/INFERENCE.md, "Colour verification"). PRVQL scores a frame by its best anchor; the colours
inside that anchor's box are a second, independent piece of evidence that the box holds the queried object and not
a look-alike of another colour. Each box and the query are described by the CIE Lab mean and standard deviation of
their central region (:func:`colour_descriptors`), compared by a weighted Euclidean distance
(:func:`colour_distance`), and a frame's score becomes a logistic combination of the two (:func:`verified_scores`)::

    score' = sigmoid(score_weight * logit(score) + colour_weight * distance + bias)

The three coefficients are fitted on training episodes (a logistic regression:
``experiments/demo_model/fit_verification.py``) and stored in the model's config; with
``inference.verification.enabled: false`` (the default) nothing here runs.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import expit, logit
from skimage.color import rgb2lab
from torch import Tensor
from torchvision.ops import roi_align

from prvql.data.transforms import IMAGENET_MEAN, IMAGENET_STD

LOGIT_EPS = 1e-4  # scores are clipped to [eps, 1 - eps] before the logit


def shrink_boxes(boxes: Tensor, factor: float) -> Tensor:
    """[K, 4] xyxy boxes scaled by ``factor`` about their centres (the same units)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * (factor / 2)
    return torch.cat([centre - half, centre + half], dim=1)


def colour_descriptors(images: Tensor, boxes: Tensor, shrink: float, grid: int) -> Tensor:
    """Lab colour statistics of a box in each image.

    Args:
        images: [K, 3, S, S] ImageNet-normalised model inputs (``prvql.data.transforms.prepare_frames``).
        boxes: [K, 4] xyxy, normalised to the padded square (the model's box space), one per image.
        shrink: only the central ``shrink`` of each box (in width and height) is described.
        grid: the region is average-pooled to ``grid x grid`` cells (``torchvision.ops.roi_align``) first.

    Returns:
        [K, 6] float32: Lab mean (L, a, b) and standard deviation over the cells.
    """
    side = images.shape[-1]
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rgb = (images.float() * std + mean).clamp(0, 1)
    regions = shrink_boxes(boxes.float().to(images.device) * side, shrink)
    rois = torch.cat([torch.arange(len(regions), device=images.device, dtype=torch.float32)[:, None], regions], 1)
    cells = roi_align(rgb, rois, output_size=grid, spatial_scale=1.0, sampling_ratio=2, aligned=True)  # [K,3,g,g]
    lab = rgb2lab(cells.permute(0, 2, 3, 1).cpu().numpy())  # [K, g, g, 3]
    flat = lab.reshape(len(lab), -1, 3)
    return torch.from_numpy(np.concatenate([flat.mean(1), flat.std(1)], axis=1).astype(np.float32))


def query_descriptors(query_images: Tensor, shrink: float, grid: int) -> Tensor:
    """[Q, 3, S, S] query crops (``prepare_query``: the squared visual-crop box) -> [Q, 6] descriptors of their
    central ``shrink`` region, where the object sits."""
    whole = query_images.new_tensor([[0.0, 0.0, 1.0, 1.0]]).expand(len(query_images), 4)
    return colour_descriptors(query_images, whole, shrink, grid)


def colour_distance(boxes: Tensor, query: Tensor, lightness_weight: float) -> Tensor:
    """Weighted Euclidean distance between [K, 6] box descriptors and a [6] (or [K, 6]) query descriptor; the
    lightness terms (L mean and std) count ``lightness_weight`` times the colour ones. Returns [K]."""
    weights = boxes.new_tensor([lightness_weight, 1.0, 1.0, lightness_weight, 1.0, 1.0])
    return (((boxes - query) ** 2) * weights).sum(-1).sqrt()


def score_logits(scores: np.ndarray) -> np.ndarray:
    """[N] scores in [0, 1] -> [N] float64 logits, the scores clipped to ``[LOGIT_EPS, 1 - LOGIT_EPS]`` first."""
    return logit(np.clip(scores.astype(np.float64), LOGIT_EPS, 1 - LOGIT_EPS))


def verified_scores(
    scores: np.ndarray, distances: np.ndarray, score_weight: float, colour_weight: float, bias: float
) -> np.ndarray:
    """[N] scores in [0, 1] and [N] colour distances -> [N] float32 ``sigmoid(score_weight * logit(score) +
    colour_weight * distance + bias)``."""
    z = score_weight * score_logits(scores) + colour_weight * distances.astype(np.float64) + bias
    return expit(z).astype(np.float32)
