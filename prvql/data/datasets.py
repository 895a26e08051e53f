"""Training and training-time validation windows for VQ2D (and EgoTracks ``lt_track``) queries."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from prvql.boxes import normalize_boxes, rescale_boxes
from prvql.config import Config
from prvql.data.annotations import QueryRecord, load_annotations, load_egotracks
from prvql.data.augment import QueryAugment, WindowAugment, recolour_box
from prvql.data.batch import Sample
from prvql.data.frames import FrameSource
from prvql.data.transforms import normalize_image, pad_resize, query_image
from prvql.data.windows import WindowSampler, build_window_sampler, positive_frames
from prvql.errors import VideoError

log = logging.getLogger(__name__)


class VQ2DTrainDataset(Dataset):
    """Windows of ``num_frames`` clip frames with per-frame labels and the query crop.

    Each item is deterministic given (``seed``, epoch, index); call :meth:`set_epoch` to draw new windows.
    A query whose clip is missing or unreadable is logged and replaced by another random query.

    Args:
        records: query records; those without a clip uid, an ``is_valid`` flag or a track are dropped.
        frame_source: where frames are read from (JPEG cache or clip mp4).
        num_frames: T, frames per window.
        input_size: S, side of the square model input.
        sampler: picks the window's frames.
        augment: window augmentation, or None (validation).
        query_augment: augmentation of the query crop on its own (``data.query_augment``), or None.
        pad_value: pad value of the square input, in [0, 1] image units.
        recoloured_queries: also give each sample its query with the visual-crop box recoloured
            (``Sample.recoloured_query``, for ``loss.recoloured_negatives``).
        seed: base seed.
        max_tries: unreadable queries tolerated in a row before giving up.
    """

    def __init__(
        self,
        records: Sequence[QueryRecord],
        frame_source: FrameSource,
        num_frames: int,
        input_size: int,
        sampler: WindowSampler,
        augment: WindowAugment | None,
        pad_value: float,
        query_augment: QueryAugment | None = None,
        recoloured_queries: bool = False,
        seed: int = 0,
        max_tries: int = 10,
    ) -> None:
        self.records = [r for r in records if r.is_valid and r.clip_uid is not None and positive_frames(r)]
        if not self.records:
            raise ValueError("no usable training records (valid, with a clip uid and a track)")
        self.frame_source = frame_source
        self.num_frames = num_frames
        self.input_size = input_size
        self.sampler = sampler
        self.augment = augment
        self.query_augment = query_augment
        self.pad_value = pad_value
        self.recoloured_queries = recoloured_queries
        self.seed = seed
        self.max_tries = max_tries
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Vary the windows drawn per epoch (the random generator is seeded by seed, epoch and index)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        error: VideoError | None = None
        for _ in range(self.max_tries):
            record = self.records[index]
            try:
                return self.load(record, rng)
            except VideoError as exc:
                log.warning("query %s skipped: %s", record.key, exc)
                error = exc
                index = int(rng.integers(len(self.records)))
        raise VideoError(f"{self.max_tries} queries in a row could not be read; last error: {error}")

    def load(self, record: QueryRecord, rng: np.random.Generator) -> Sample:
        """The window for ``record`` drawn with ``rng``.

        Raises:
            VideoError: the clip (or its cached frames) cannot be read.
        """
        clip_uid = record.clip_uid
        assert clip_uid is not None
        clip_frames = record.clip_num_frames or self.frame_source.num_frames(clip_uid)
        indices = self.sampler(record, clip_frames, self.num_frames, rng)
        images = self.frame_source.read(clip_uid, [*indices.tolist(), record.visual_crop_frame])
        frames, query_frame = images[:-1], images[-1]
        height, width = frames.shape[1:3]
        original = (record.frame_height, record.frame_width)

        track = dict(record.lt_track or record.response_track or ())
        occurrence = torch.tensor([int(i) in track for i in indices], dtype=torch.bool)
        boxes = torch.zeros(len(indices), 4)
        for t, i in enumerate(indices.tolist()):
            if i in track:
                pixel = rescale_boxes(torch.tensor(track[i]), original, (height, width))
                boxes[t] = normalize_boxes(pixel, height, width)
        before_query = torch.from_numpy(indices < record.query_frame)

        x = pad_resize(frames, self.input_size, self.pad_value)
        if self.augment is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**62)))
                x, boxes, occurrence = self.augment(x, boxes, occurrence)
        crop = rescale_boxes(torch.tensor(record.visual_crop_box), original, query_frame.shape[:2])
        recoloured = (
            self._query(recolour_box(query_frame, crop.tolist(), rng), crop, rng) if self.recoloured_queries else None
        )
        return Sample(
            frames=normalize_image(x),
            query=self._query(query_frame, crop, rng),
            boxes=boxes,
            occurrence=occurrence,
            before_query=before_query,
            key=record.key,
            recoloured_query=recoloured,
        )

    def _query(self, frame: np.ndarray, crop: Tensor, rng: np.random.Generator) -> Tensor:
        """The normalised query [3, S, S] cut from ``frame`` [H, W, 3] at ``crop`` (xyxy pixels), augmented if set."""
        image = query_image(frame, crop, self.input_size)
        if self.query_augment is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**62)))
                image = self.query_augment(image)
        return normalize_image(image)


def _resolve(root: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else root / path


def build_train_dataset(cfg: Config, split: str = "train") -> VQ2DTrainDataset:
    """The training dataset (``split="train"``) or the training-time validation set (``"val"``: balance sampler,
    no augmentation) described by ``cfg.data``; windows of ``cfg.model.num_frames`` at ``cfg.model.input_size``.

    With ``cfg.data.egotracks_annotations`` the training records come from EgoTracks (``lt_track`` occurrences,
    every frame supervised), as the released PRVQL checkpoint was trained.
    """
    data = cfg.data
    root = Path(data.root)
    if split == "train":
        if data.egotracks_annotations:
            records = load_egotracks(_resolve(root, data.egotracks_annotations))
        else:
            records = load_annotations(_resolve(root, data.train_annotations)).valid_records()
        sampler = build_window_sampler(data.sampler)
        augment = (
            WindowAugment(cfg.model.input_size, data.color_jitter, data.flip_prob, data.crop_scale, data.crop_ratio)
            if data.augment
            else None
        )
        query_augment = (
            QueryAugment(
                data.color_jitter,
                data.query_degrees,
                data.query_perspective,
                data.query_scale,
                data.query_blur_prob,
                fill=data.pad_value,
            )
            if data.query_augment
            else None
        )
    elif split == "val":
        records = load_annotations(_resolve(root, data.val_annotations)).valid_records()
        sampler, augment, query_augment = build_window_sampler("balance"), None, None
    else:
        raise ValueError(f"unknown split {split!r} (train or val)")
    frames_dir = _resolve(root, data.frames_dir) if data.frames_dir else None
    source = FrameSource(_resolve(root, data.clips_dir), frames_dir)
    return VQ2DTrainDataset(
        records,
        source,
        num_frames=cfg.model.num_frames,
        input_size=cfg.model.input_size,
        sampler=sampler,
        augment=augment,
        query_augment=query_augment,
        pad_value=data.pad_value,
        recoloured_queries=split == "train" and cfg.loss.recoloured_negatives,
        seed=cfg.train.seed,
    )
