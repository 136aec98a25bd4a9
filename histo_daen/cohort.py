"""Split a cohort of inputs across machines: ``--shard K/N``, Slurm arrays, or torchrun ranks. No coordinator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from histo_daen.errors import ConfigError

__all__ = ["Shard", "parse_shard", "shard_from_environment", "shard_items"]

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): this process handles items ``index, index + count, ...``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"shard {self.index}/{self.count}: need 0 <= K < N, e.g. --shard 0/4 ... --shard 3/4")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"2/8"`` -> ``Shard(2, 8)``. K is 0-based (Slurm: ``--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``)."""
    parts = text.strip().split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. --shard 0/4")
    return Shard(int(parts[0]), int(parts[1]))


def shard_from_environment(environ: Mapping[str, str]) -> Shard | None:
    """The shard of a torchrun process (``RANK``/``WORLD_SIZE``), or None outside torchrun."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        try:
            return Shard(int(environ["RANK"]), int(environ["WORLD_SIZE"]))
        except ValueError as err:
            raise ConfigError(f"RANK/WORLD_SIZE in the environment are not integers: {err}") from err
    return None


def shard_items(items: Sequence[T], shard: Shard | None) -> list[T]:
    """The items of one shard, round robin over the given order (callers pass a sorted, stable list)."""
    if shard is None:
        return list(items)
    return [item for position, item in enumerate(items) if position % shard.count == shard.index]
