"""Pictures of inference results: boxes drawn on frames, the query inset, result-video frames, the score plot.

Boxes are xyxy pixels of the frame they are drawn on. Drawing uses ``torchvision.utils.draw_bounding_boxes``,
plots are matplotlib (Agg), written atomically; videos go through ``prvql.data.video.write_video``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prvql.atomic import atomic_path

PREDICTION_COLOR = "#00ff66"
GROUND_TRUTH_COLOR = "#ff3355"
CANDIDATE_COLOR = "#8899aa"
INSET_FRACTION = 0.25  # the query inset's long side, as a fraction of the frame's short side
MIN_INSET_SIDE = 32  # pixels


@dataclass(frozen=True)
class Overlay:
    """One box to draw on one frame.

    Attributes:
        box: (x1, y1, x2, y2) pixels of the frame.
        color: any colour matplotlib / PIL understands (``"#rrggbb"``, ``"red"``).
        label: text drawn above the box, or None.
        width: line width in pixels.
    """

    box: tuple[float, float, float, float]
    color: str
    label: str | None = None
    width: int = 3


def draw_overlays(frame: np.ndarray, overlays: Sequence[Overlay]) -> np.ndarray:
    """Draw boxes on a copy of ``frame``.

    Args:
        frame: uint8 [H, W, 3].
        overlays: boxes to draw, in order (later ones on top).

    Returns:
        uint8 [H, W, 3].
    """
    from torchvision.utils import draw_bounding_boxes

    image = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)  # [3, H, W]
    for overlay in overlays:
        box = torch.tensor([overlay.box], dtype=torch.float32)
        if not (box[0, 2] > box[0, 0] and box[0, 3] > box[0, 1]):
            continue
        image = draw_bounding_boxes(
            image,
            box,
            labels=[overlay.label] if overlay.label else None,
            colors=overlay.color,
            width=overlay.width,
        )
    return image.permute(1, 2, 0).numpy()


def paste_inset(frame: np.ndarray, inset: np.ndarray, max_side: int) -> np.ndarray:
    """Copy of ``frame`` [H, W, 3] with ``inset`` [h, w, 3] shrunk to fit ``max_side`` pasted in the top-left corner."""
    from PIL import Image

    image = Image.fromarray(inset)
    image.thumbnail((max_side, max_side))
    small = np.asarray(image)
    out = frame.copy()
    h, w = min(small.shape[0], out.shape[0]), min(small.shape[1], out.shape[1])
    out[:h, :w] = small[:h, :w]
    return out


def even_size(frame: np.ndarray) -> np.ndarray:
    """Crop uint8 [H, W, 3] by at most one row and column so both sides are even (what H.264 yuv420p needs)."""
    return frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]


def crop_box(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The pixels of an xyxy ``box`` in ``image``: uint8 [H, W, 3] -> [h, w, 3], at least one pixel.

    The box is widened to whole pixels (floor of x1, y1; ceiling of x2, y2) and clipped to the image.
    """
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    left = min(max(int(np.floor(x1)), 0), width - 1)
    top = min(max(int(np.floor(y1)), 0), height - 1)
    right = min(max(int(np.ceil(x2)), left + 1), width)
    bottom = min(max(int(np.ceil(y2)), top + 1), height)
    return image[top:bottom, left:right]


def video_frame(frame: np.ndarray, overlays: Sequence[Overlay], inset: np.ndarray) -> np.ndarray:
    """One frame of a result video: ``overlays`` drawn, the query crop ``inset`` in the top-left corner.

    Args:
        frame: uint8 [H, W, 3].
        overlays: boxes to draw (see :func:`draw_overlays`).
        inset: uint8 [h, w, 3] the query crop, shrunk so its long side is at most ``INSET_FRACTION`` of the
            frame's short side (``MIN_INSET_SIDE`` pixels at least).

    Returns:
        uint8 [H', W', 3] with even sides (:func:`even_size`).
    """
    side = max(MIN_INSET_SIDE, int(min(frame.shape[:2]) * INSET_FRACTION))
    return even_size(paste_inset(draw_overlays(frame, overlays), inset, side))


def plot_scores(
    path: str | Path,
    scores: np.ndarray,
    *,
    peak: int | None = None,
    peak_threshold: float | None = None,
    track_threshold: float | None = None,
    track: tuple[int, int] | None = None,
    ground_truth: tuple[int, int] | None = None,
    smoothed: np.ndarray | None = None,
    fps: float | None = None,
    title: str | None = None,
    ruled_out_before: int = 0,
) -> None:
    """Plot a per-frame score curve with the chosen peak, the thresholds and the response track marked.

    Args:
        path: output image (``.png``), written atomically.
        scores: [N] per-frame scores in [0, 1].
        peak: frame index of the chosen peak.
        peak_threshold: absolute score a peak had to exceed to be kept.
        track_threshold: absolute score the track grew over.
        track: inclusive (start, end) frames of the predicted track.
        ground_truth: inclusive (start, end) frames of the annotated track, if known.
        smoothed: [N] the smoothed curve the post-processing used, when it differs from ``scores``.
        fps: when given, a second axis shows seconds.
        title: figure title.
        ruled_out_before: frames before this one could not be the answer (``inference.after_visual_crop``:
            at or before the visual crop's frame), shaded grey; 0 = none.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = np.arange(len(scores))
    fig, ax = plt.subplots(figsize=(12, 3.6), dpi=100)
    try:
        if ruled_out_before > 0:
            span = (-0.5, ruled_out_before - 0.5)
            ax.axvspan(*span, color="#9e9e9e", alpha=0.3, hatch="//", label="ruled out (visual crop)")
        if track is not None and track[1] >= track[0]:
            ax.axvspan(track[0] - 0.5, track[1] + 0.5, color=PREDICTION_COLOR, alpha=0.25, label="predicted track")
        if ground_truth is not None and ground_truth[1] >= ground_truth[0]:
            ax.axvspan(
                ground_truth[0] - 0.5, ground_truth[1] + 0.5, color=GROUND_TRUTH_COLOR, alpha=0.2, label="ground truth"
            )
        ax.plot(frames, scores, color="#1f4e9c", lw=1.2, label="score")
        if smoothed is not None:
            ax.plot(frames, smoothed, color="#6a3d9a", lw=1.0, ls="--", label="smoothed")
        if peak_threshold is not None:
            ax.axhline(peak_threshold, color="#e08000", lw=1, ls=":", label=f"peak threshold {peak_threshold:.3f}")
        if track_threshold is not None:
            ax.axhline(track_threshold, color="#2a9d8f", lw=1, ls=":", label=f"track threshold {track_threshold:.3f}")
        if peak is not None and 0 <= peak < len(scores):
            curve = smoothed if smoothed is not None else scores
            ax.plot([peak], [curve[peak]], marker="v", color="#d62828", ms=9, ls="none", label=f"peak (frame {peak})")
        ax.set_xlim(-0.5, max(len(scores) - 0.5, 0.5))
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("frame (model fps)")
        ax.set_ylabel("score")
        if fps:
            top = ax.secondary_xaxis("top", functions=(lambda f: f / fps, lambda t: t * fps))
            top.set_xlabel("seconds")
        if title:
            fig.suptitle(title, fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
