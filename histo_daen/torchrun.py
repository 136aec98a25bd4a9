"""The one reader of torchrun's environment: where this process stands among the processes of one launch.

``torchrun`` (and Slurm launchers that mimic it) set ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; a plain
``python`` process is a world of one. Training uses the place to form a process group, cohort jobs to pick their
shard of the slides, and both to put each process on its own GPU (``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from histo_daen.errors import ConfigError

__all__ = ["ProcessPlace", "process_place"]


@dataclass(frozen=True)
class ProcessPlace:
    """This process's rank, its index on its node (the GPU it owns) and the number of processes."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints results and writes shared files."""
        return self.rank == 0

    @property
    def under_torchrun(self) -> bool:
        return self.world_size > 1


def process_place(environ: Mapping[str, str] | None = None) -> ProcessPlace:
    """The place torchrun gave this process (``os.environ`` by default); a world of one outside torchrun.

    Raises:
        ConfigError: the variables are not integers, or do not fit together.
    """
    environ = os.environ if environ is None else environ
    try:
        world_size = int(environ.get("WORLD_SIZE", "1"))
        rank = int(environ.get("RANK", "0"))
        local_rank = int(environ.get("LOCAL_RANK", "0"))
    except ValueError as err:
        raise ConfigError(f"RANK/LOCAL_RANK/WORLD_SIZE in the environment are not integers: {err}") from err
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"RANK={rank} WORLD_SIZE={world_size} in the environment do not fit together")
    return ProcessPlace(rank, local_rank, world_size)
