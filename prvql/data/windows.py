"""Which T frames of a clip make one training window.

- :class:`BalanceWindowSampler` (VQLoC's VQ2D sampler): a response track no longer than the window lies entirely inside
  it, with a random number of frames before it; a longer track contains the window.
- :class:`RandomWindowSampler` (VQLoC's EgoTracks sampler, without its off-by-one): a window around one random positive
  frame (from ``lt_track`` when the record has one, else from the response track), so it always holds a positive.

Frame indices past the end of the clip are clamped to its last frame (the frame repeats).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from prvql.data.annotations import QueryRecord


def positive_frames(record: QueryRecord) -> list[int]:
    """Clip frames where the object is annotated: ``lt_track`` when present, else the response track."""
    track = record.lt_track or record.response_track or ()
    return [frame for frame, _ in track]


class WindowSampler(Protocol):
    """Picks the clip frames of one training window for a query."""

    def __call__(self, record: QueryRecord, clip_frames: int, window: int, rng: np.random.Generator) -> np.ndarray:
        """Frame indices int64 [window], increasing by one (clamped to ``clip_frames - 1``)."""
        ...


def _window(start: int, clip_frames: int, window: int) -> np.ndarray:
    return np.minimum(np.arange(start, start + window), clip_frames - 1).astype(np.int64)


class BalanceWindowSampler:
    """Cover the response track: all of it when it fits, else a window fully inside it."""

    def __call__(self, record: QueryRecord, clip_frames: int, window: int, rng: np.random.Generator) -> np.ndarray:
        frames = positive_frames(record)
        if not frames:
            raise ValueError(f"{record.key}: no response track to sample around")
        first, last = min(frames), max(frames)
        if last - first + 1 <= window:
            low = max(0, last - window + 1)
            high = max(low, min(first, clip_frames - window))
        else:
            low, high = first, last - window + 1
        return _window(int(rng.integers(low, high + 1)), clip_frames, window)


class RandomWindowSampler:
    """A window holding one positive frame chosen uniformly, at a uniform offset inside the window."""

    def __call__(self, record: QueryRecord, clip_frames: int, window: int, rng: np.random.Generator) -> np.ndarray:
        frames = positive_frames(record)
        if not frames:
            raise ValueError(f"{record.key}: no positive frame to sample around")
        frame = int(frames[rng.integers(len(frames))])
        start = max(0, frame - int(rng.integers(window)))
        start = min(start, max(0, clip_frames - window))
        return _window(start, clip_frames, window)


SAMPLERS: dict[str, type] = {"balance": BalanceWindowSampler, "random": RandomWindowSampler}


def build_window_sampler(name: str) -> WindowSampler:
    """``"balance"`` or ``"random"``."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r} (known: {', '.join(SAMPLERS)})")
    return SAMPLERS[name]()
