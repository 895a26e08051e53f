"""The response track: one predicted or annotated tube of boxes on contiguous clip frames, with a score.

This is the unit the official Ego4D VQ2D metrics work on (``vq2d/structures.py`` upstream): frames are clip frame
numbers (0-based, 5 fps), boxes are xyxy pixels of the original frame, and the frames of a track must be
contiguous. An empty track is allowed (an empty prediction); its temporal extent is ``(0, -1)`` as upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class ResponseTrack:
    """Boxes on contiguous frames and a confidence score.

    Args:
        frames: int64 [N] clip frame numbers. Any order on input; stored sorted.
        boxes: float64 [N, 4] xyxy pixels, one per frame (reordered with the frames).
        score: confidence used to rank predictions in the AP metrics (ground truth: unused).

    Raises:
        ValueError: if shapes disagree, or the frames are not contiguous (a gap or a repeated frame).
    """

    frames: np.ndarray
    boxes: np.ndarray
    score: float = 1.0

    def __post_init__(self) -> None:
        frames = np.asarray(self.frames, dtype=np.int64).reshape(-1)
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        if len(frames) != len(boxes):
            raise ValueError(f"{len(frames)} frames but {len(boxes)} boxes")
        order = np.argsort(frames, kind="stable")
        frames, boxes = frames[order], boxes[order]
        gap = first_gap(frames)
        if gap is not None:
            raise ValueError(f"frames not contiguous (fno {frames[gap]} after {frames[gap - 1]})")
        frames.setflags(write=False)
        boxes.setflags(write=False)
        object.__setattr__(self, "frames", frames)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "score", float(self.score))

    @classmethod
    def empty(cls, score: float = 0.0) -> ResponseTrack:
        """A track without boxes (what the challenge file holds for a query without a prediction)."""
        return cls(np.zeros(0, dtype=np.int64), np.zeros((0, 4)), score)

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[int, Sequence[float]]], score: float = 1.0) -> ResponseTrack:
        """From ``[(frame_number, (x1, y1, x2, y2)), ...]``, e.g. ``QueryRecord.response_track``."""
        frames = [fno for fno, _ in pairs]
        boxes = [list(box) for _, box in pairs]
        return cls(np.asarray(frames, dtype=np.int64), np.asarray(boxes, dtype=np.float64).reshape(-1, 4), score)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def extent(self) -> tuple[int, int]:
        """Inclusive (first, last) frame; ``(0, -1)`` for an empty track, as upstream."""
        if len(self.frames) == 0:
            return 0, -1
        return int(self.frames[0]), int(self.frames[-1])

    @property
    def areas(self) -> np.ndarray:
        """float64 [N] box areas ``(x2 - x1) * (y2 - y1)`` in pixels (no +1, as upstream)."""
        return (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])


def first_gap(frames: np.ndarray) -> int | None:
    """Index ``i`` of the first sorted frame that does not follow ``frames[i - 1]`` by one; None if contiguous.

    Args:
        frames: int [N], sorted ascending.
    """
    bad = np.flatnonzero(np.diff(frames) != 1)
    return int(bad[0]) + 1 if len(bad) else None
