"""The typed training batch and its collate function."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Sample:
    """One training window.

    Attributes:
        frames: float [T, 3, S, S], ImageNet-normalised.
        query: float [3, S, S], ImageNet-normalised.
        boxes: float [T, 4], normalised xyxy of the padded square input; zeros where the object is absent.
        occurrence: bool [T], the object is visible in the frame.
        before_query: bool [T], the frame precedes the query frame (frames the loss supervises).
        key: ``f"{annotation_uid}_{query_set}"``.
        recoloured_query: float [3, S, S], the query with its box recoloured (``loss.recoloured_negatives``), or None.
    """

    frames: Tensor
    query: Tensor
    boxes: Tensor
    occurrence: Tensor
    before_query: Tensor
    key: str
    recoloured_query: Tensor | None = None


@dataclass
class Batch:
    """B windows stacked.

    Attributes:
        frames: float [B, T, 3, S, S], ImageNet-normalised.
        query: float [B, 3, S, S], ImageNet-normalised.
        boxes: float [B, T, 4], normalised xyxy; zeros where absent.
        occurrence: bool [B, T].
        before_query: bool [B, T].
        keys: B query keys.
        recoloured_query: float [B, 3, S, S] (``loss.recoloured_negatives``), or None.
    """

    frames: Tensor
    query: Tensor
    boxes: Tensor
    occurrence: Tensor
    before_query: Tensor
    keys: list[str]
    recoloured_query: Tensor | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on ``device``."""
        return Batch(
            frames=self.frames.to(device, non_blocking=non_blocking),
            query=self.query.to(device, non_blocking=non_blocking),
            boxes=self.boxes.to(device, non_blocking=non_blocking),
            occurrence=self.occurrence.to(device, non_blocking=non_blocking),
            before_query=self.before_query.to(device, non_blocking=non_blocking),
            keys=list(self.keys),
            recoloured_query=None
            if self.recoloured_query is None
            else self.recoloured_query.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> Batch:
        """Page-locked copies (called by ``DataLoader(pin_memory=True)``)."""
        return Batch(
            frames=self.frames.pin_memory(),
            query=self.query.pin_memory(),
            boxes=self.boxes.pin_memory(),
            occurrence=self.occurrence.pin_memory(),
            before_query=self.before_query.pin_memory(),
            keys=list(self.keys),
            recoloured_query=None if self.recoloured_query is None else self.recoloured_query.pin_memory(),
        )


def collate(samples: list[Sample]) -> Batch:
    """Stack samples into a :class:`Batch`."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    return Batch(
        frames=torch.stack([s.frames for s in samples]),
        query=torch.stack([s.query for s in samples]),
        boxes=torch.stack([s.boxes for s in samples]),
        occurrence=torch.stack([s.occurrence for s in samples]),
        before_query=torch.stack([s.before_query for s in samples]),
        keys=[s.key for s in samples],
        recoloured_query=None
        if any(s.recoloured_query is None for s in samples)
        else torch.stack([s.recoloured_query for s in samples]),  # type: ignore[misc]
    )
