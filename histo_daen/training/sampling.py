"""Which patches each process loads at each step: DistributedSampler's shuffle, cut into micro-batches of keys.

A micro-batch is a list of ``(epoch, index)`` keys; :class:`~histo_daen.data.patch_dataset.PatchDataset` draws a
patch's augmentation from that key. With the global batch split evenly over ranks and micro-batches, optimiser
step ``s`` of epoch ``e`` covers the same patches, positions ``[s * B, (s + 1) * B)`` of the epoch's shuffle, on one
process or many, and a resumed run restarts at any step by skipping whole micro-batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from torch.utils.data import Dataset, DistributedSampler, Sampler

__all__ = ["EpochBatchSampler"]


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Micro-batches of ``(epoch, index)`` keys for one rank and one epoch.

    Args:
        n_items: patches in the dataset.
        epoch: the epoch (seeds the shuffle with ``seed + epoch`` as ``DistributedSampler.set_epoch`` does).
        micro_batch: patches per micro-batch on this rank (global batch / world size / accumulation steps).
        n_micro_batches: micro-batches this rank runs in this epoch (steps x accumulation steps).
        rank, world_size: this process among all.
        seed: the run's seed.
        start: micro-batches already done in this epoch (skipped, for a resumed run).
        shuffle: False keeps dataset order (tests).
    """

    def __init__(
        self,
        n_items: int,
        *,
        epoch: int,
        micro_batch: int,
        n_micro_batches: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start: int = 0,
        shuffle: bool = True,
    ) -> None:
        per_rank = n_items // world_size
        if micro_batch * n_micro_batches > per_rank:
            raise ValueError(
                f"{n_micro_batches} micro-batches of {micro_batch} need {micro_batch * n_micro_batches} patches per "
                f"rank, but {n_items} patches over {world_size} ranks give {per_rank}"
            )
        self.n_items = n_items
        self.epoch = epoch
        self.micro_batch = micro_batch
        self.n_micro_batches = n_micro_batches
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.start = start
        self.shuffle = shuffle

    def _rank_indices(self) -> list[int]:
        sampler: DistributedSampler[int] = DistributedSampler(
            cast(Dataset[int], range(self.n_items)),  # only len() is used
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=self.shuffle,
            seed=self.seed,
            drop_last=True,
        )
        sampler.set_epoch(self.epoch)
        return list(sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        indices = self._rank_indices()
        size = self.micro_batch
        for batch in range(self.start, self.n_micro_batches):
            yield [(self.epoch, index) for index in indices[batch * size : (batch + 1) * size]]

    def __len__(self) -> int:
        return max(0, self.n_micro_batches - self.start)
