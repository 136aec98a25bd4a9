"""Splitting a cohort over machines without a coordinator."""

from __future__ import annotations

import pytest

from histo_daen.cohort import Shard, parse_shard, shard_from_environment, shard_items
from histo_daen.errors import ConfigError


def test_shards_partition_the_items() -> None:
    items = [f"slide_{i}.svs" for i in range(10)]
    parts = [shard_items(items, Shard(k, 3)) for k in range(3)]
    assert sorted(item for part in parts for item in part) == sorted(items)
    assert parts[0] == ["slide_0.svs", "slide_3.svs", "slide_6.svs", "slide_9.svs"]


def test_no_shard_means_everything() -> None:
    assert shard_items(["a", "b"], None) == ["a", "b"]


def test_parse_shard_reads_k_over_n() -> None:
    assert parse_shard("2/8") == Shard(2, 8)


@pytest.mark.parametrize("text", ["8/8", "1", "a/b", "-1/2", "1/0"])
def test_parse_shard_refuses_bad_values_with_an_example(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--shard 0/4"):
        parse_shard(text)


def test_torchrun_environment_gives_the_shard() -> None:
    assert shard_from_environment({"RANK": "1", "WORLD_SIZE": "4"}) == Shard(1, 4)
    assert shard_from_environment({}) is None
