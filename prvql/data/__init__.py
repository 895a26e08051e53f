"""Ego4D VQ2D data: annotations, exact video reading, model-input transforms, training windows, datasets, clip
extraction. (The synthetic episode generator is :mod:`prvql.synth`.)

The names below are imported lazily, so that ``prvql synth`` and ``prvql data`` (which need no torch) start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "AnnotationEntry": "annotations",
    "AnnotationSet": "annotations",
    "ClipEntry": "annotations",
    "QueryRecord": "annotations",
    "VideoEntry": "annotations",
    "load_annotations": "annotations",
    "load_egotracks": "annotations",
    "Batch": "batch",
    "Sample": "batch",
    "collate": "batch",
    "VQ2DTrainDataset": "datasets",
    "build_train_dataset": "datasets",
    "FrameSource": "frames",
    "normalize_image": "transforms",
    "pad_resize": "transforms",
    "prepare_frames": "transforms",
    "prepare_query": "transforms",
    "VideoReader": "video",
    "resample_indices": "video",
    "write_video": "video",
}

__all__ = [
    "AnnotationEntry",
    "AnnotationSet",
    "Batch",
    "ClipEntry",
    "FrameSource",
    "QueryRecord",
    "Sample",
    "VQ2DTrainDataset",
    "VideoEntry",
    "VideoReader",
    "build_train_dataset",
    "collate",
    "load_annotations",
    "load_egotracks",
    "normalize_image",
    "pad_resize",
    "prepare_frames",
    "prepare_query",
    "resample_indices",
    "write_video",
]

if TYPE_CHECKING:
    from prvql.data.annotations import (
        AnnotationEntry,
        AnnotationSet,
        ClipEntry,
        QueryRecord,
        VideoEntry,
        load_annotations,
        load_egotracks,
    )
    from prvql.data.batch import Batch, Sample, collate
    from prvql.data.datasets import VQ2DTrainDataset, build_train_dataset
    from prvql.data.frames import FrameSource
    from prvql.data.transforms import normalize_image, pad_resize, prepare_frames, prepare_query
    from prvql.data.video import VideoReader, resample_indices, write_video


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'prvql.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"prvql.data.{_EXPORTS[name]}"), name)
