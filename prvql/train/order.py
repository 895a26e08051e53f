"""Deterministic, resumable training data order.

The training dataset draws each item from (seed, epoch, index) alone (``VQ2DTrainDataset.set_epoch``), so a
sample does not depend on the number of workers or on where a run was interrupted. Indices come from
:class:`torch.utils.data.DistributedSampler` (shuffled per epoch with the run seed, one shard per rank). A
:class:`BatchStream` records (epoch, position) of the batches the loop has consumed; a resumed run starts its
loader at that position and sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from prvql.errors import ConfigError


class ShardSampler(Sampler[int]):
    """This rank's shuffled shard of one epoch, skipping the first ``start`` indices.

    Args:
        size: dataset length.
        seed: run seed.
        epoch: epoch number (changes the order).
        rank, world_size: this process's place in the group.
        start: indices of this rank's shard already consumed before a resume.
    """

    def __init__(self, size: int, *, seed: int, epoch: int, rank: int, world_size: int, start: int = 0) -> None:
        self.order = DistributedSampler(
            range(size), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.order.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.order)[self.start :])

    def __len__(self) -> int:
        return max(0, self.order.num_samples - self.start)


class BatchStream:
    """Endless stream of training batches that knows its (epoch, position) for checkpoints.

    Args:
        dataset: the training dataset; its ``set_epoch(epoch)`` is called at every epoch when it has one.
        collate: list of samples -> batch.
        batch_size: samples per batch on this rank.
        num_workers: DataLoader worker processes.
        seed, rank, world_size: see :class:`ShardSampler`.
        epoch, position: where to start (position = samples of this rank's shard already consumed).
    """

    def __init__(
        self,
        dataset: Dataset,
        collate: Callable[[list[Any]], Any],
        *,
        batch_size: int,
        num_workers: int,
        seed: int,
        rank: int,
        world_size: int,
        epoch: int = 0,
        position: int = 0,
    ) -> None:
        size = len(dataset)  # type: ignore[arg-type]
        if size // world_size < batch_size:
            raise ConfigError(
                f"train.batch_size: {batch_size} per process needs at least {batch_size * world_size} training "
                f"queries on {world_size} process(es); the dataset has {size}"
            )
        self.dataset = dataset
        self.collate = collate
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.position = epoch, position
        self._iterator: Iterator[Any] | None = None

    def _start_epoch(self) -> Iterator[Any]:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        sampler = ShardSampler(
            len(self.dataset),
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,  # type: ignore
            world_size=self.world_size,
            start=self.position,
        )
        return iter(make_loader(self.dataset, sampler, self.collate, self.batch_size, self.num_workers, True))

    def next(self) -> Any:
        """The next batch; a new epoch starts when the current one is used up."""
        while True:
            if self._iterator is None:
                self._iterator = self._start_epoch()
            try:
                batch = next(self._iterator)
            except StopIteration:
                self._iterator = None
                self.epoch, self.position = self.epoch + 1, 0
                continue
            self.position += self.batch_size
            return batch

    def state(self) -> dict[str, int]:
        """Where the stream is (``epoch``, ``position``), for the training checkpoint."""
        return {"epoch": self.epoch, "position": self.position}


def make_loader(
    dataset: Dataset,
    sampler: Sampler | Sequence[int],
    collate: Callable[[list[Any]], Any],
    batch_size: int,
    num_workers: int,
    drop_last: bool,
) -> DataLoader:
    """A DataLoader whose own seed generator is private, so creating it never moves the global torch RNG."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(0),
    )
