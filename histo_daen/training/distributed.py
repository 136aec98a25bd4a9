"""torchrun's process group, and the few collective helpers the loop needs (the place: :mod:`histo_daen.torchrun`).

One code path: a plain ``python`` process is a world of size 1 (no process group, every helper a no-op); under
``torchrun`` the group is created from the environment with gloo on CPU and NCCL on CUDA, and each process uses
``cuda:LOCAL_RANK``. Nothing here is home-made scale-out: DistributedDataParallel and DistributedSampler do the work.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from histo_daen.errors import ConfigError
from histo_daen.torchrun import process_place

__all__ = [
    "DistributedContext",
    "all_gather_objects",
    "barrier",
    "distributed_context",
    "mean_over_ranks",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: rank, local rank (GPU index on its node), world size and its device."""

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None  # "gloo" | "nccl" when a process group is up

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, shows progress bars and writes files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


@contextlib.contextmanager
def distributed_context(device: torch.device, *, timeout_s: float = 1800.0) -> Iterator[DistributedContext]:
    """Set up (and finally tear down) the process group torchrun describes in the environment.

    Args:
        device: the device resolved at the entry point; under torchrun a CUDA device becomes ``cuda:LOCAL_RANK``.
        timeout_s: collective timeout (a rank stuck for longer fails instead of hanging forever).

    Yields:
        The context; a world of size 1 outside torchrun, with no process group created.
    """
    place = process_place()
    rank, local_rank, world_size = place.rank, place.local_rank, place.world_size
    if world_size == 1:
        yield DistributedContext(device=device)
        return
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)  # one GPU per process, whatever index was asked for
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise ConfigError(f"the process group ({dist.get_rank()}/{dist.get_world_size()}) disagrees with torchrun's")
    logger.debug("rank %d of %d on %s (%s)", rank, world_size, device, backend)
    try:
        yield DistributedContext(device, rank, local_rank, world_size, backend)
    finally:
        if created:
            dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    """Wait for every rank (no-op in a world of one)."""
    if ctx.is_distributed:
        dist.barrier()


def mean_over_ranks(values: Mapping[str, float], ctx: DistributedContext) -> dict[str, float]:
    """Average scalars over ranks (loss terms for logging: rank 0 reports the global batch, not its shard)."""
    if not ctx.is_distributed or not values:
        return dict(values)
    keys = sorted(values)
    # gloo reduces CPU tensors only; NCCL needs them on the GPU.
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, tensor.tolist(), strict=True)}


def all_gather_objects(value: Any, ctx: DistributedContext) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order; ``[value]`` in a world of one."""
    if not ctx.is_distributed:
        return [value]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered
