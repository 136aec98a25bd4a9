from __future__ import annotations

import pytest
import torch

from histo_daen.errors import ConfigError
from histo_daen.training.distributed import (
    DistributedContext,
    all_gather_objects,
    distributed_context,
    mean_over_ranks,
)


def test_plain_process_is_a_world_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with distributed_context(torch.device("cpu")) as ctx:
        assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed, ctx.backend) == (0, 1, True, False, None)
        assert mean_over_ranks({"loss": 2.5}, ctx) == {"loss": 2.5}
        assert all_gather_objects({"a": 1}, ctx) == [{"a": 1}]


def test_inconsistent_torchrun_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    context = distributed_context(torch.device("cpu"))
    with pytest.raises(ConfigError, match="RANK=2 WORLD_SIZE=2 in the environment do not fit together"):
        context.__enter__()


def test_a_context_of_rank_0_is_the_main_process() -> None:
    assert DistributedContext(torch.device("cpu")).is_main
