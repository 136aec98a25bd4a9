from __future__ import annotations

import pytest

from histo_daen.training.sampling import EpochBatchSampler


def _global_steps(world_size: int, *, accumulation: int = 1, batch: int = 4, steps: int = 3) -> list[set[int]]:
    """The patches of each optimiser step, gathered over ranks and micro-batches."""
    micro = batch // (world_size * accumulation)
    per_rank = [
        list(
            EpochBatchSampler(
                25, epoch=2, micro_batch=micro, n_micro_batches=steps * accumulation, rank=r, world_size=world_size
            )
        )
        for r in range(world_size)
    ]
    return [
        {
            index
            for r in range(world_size)
            for m in per_rank[r][s * accumulation : (s + 1) * accumulation]
            for _, index in m
        }
        for s in range(steps)
    ]


@pytest.mark.parametrize(("world_size", "accumulation"), [(2, 1), (4, 1), (2, 2), (1, 4)])
def test_every_split_of_the_global_batch_covers_the_same_patches_per_step(world_size: int, accumulation: int) -> None:
    assert _global_steps(world_size, accumulation=accumulation) == _global_steps(1)


def test_keys_carry_the_epoch_and_batches_restart_at_a_step() -> None:
    full = list(EpochBatchSampler(10, epoch=3, micro_batch=2, n_micro_batches=4))
    resumed = list(EpochBatchSampler(10, epoch=3, micro_batch=2, n_micro_batches=4, start=3))
    assert all(epoch == 3 for batch in full for epoch, _ in batch)
    assert resumed == full[3:]


def test_epochs_shuffle_differently() -> None:
    first = list(EpochBatchSampler(10, epoch=0, micro_batch=5, n_micro_batches=2))
    second = list(EpochBatchSampler(10, epoch=1, micro_batch=5, n_micro_batches=2))
    assert [i for b in first for _, i in b] != [i for b in second for _, i in b]


def test_too_many_batches_for_the_data_is_refused() -> None:
    with pytest.raises(ValueError, match="need 12 patches per rank, but 20 patches over 2 ranks give 10"):
        EpochBatchSampler(20, epoch=0, micro_batch=4, n_micro_batches=3, world_size=2)
