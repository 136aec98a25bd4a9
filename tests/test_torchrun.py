"""Where a process stands in a torchrun launch, and the device that gives it: read once, from the environment."""

from __future__ import annotations

import pytest
import torch

from histo_daen.devices import place_device, process_device
from histo_daen.errors import ConfigError
from histo_daen.torchrun import ProcessPlace, process_place


def test_a_plain_process_is_a_world_of_one() -> None:
    place = process_place({})
    assert place == ProcessPlace() and place.is_main and not place.under_torchrun


def test_torchrun_variables_give_the_place() -> None:
    place = process_place({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert (place.rank, place.local_rank, place.world_size, place.is_main) == (3, 1, 4, False)


@pytest.mark.parametrize(
    ("environ", "message"),
    [({"RANK": "x", "WORLD_SIZE": "2"}, "not integers"), ({"RANK": "2", "WORLD_SIZE": "2"}, "do not fit together")],
)
def test_inconsistent_variables_are_refused(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        process_place(environ)


def test_under_torchrun_an_unnumbered_gpu_is_the_process_own() -> None:
    second = ProcessPlace(rank=1, local_rank=1, world_size=2)
    assert place_device(torch.device("cuda"), second) == torch.device("cuda", 1)
    assert place_device(torch.device("cuda", 0), second) == torch.device("cuda", 0)  # asked for: kept
    assert place_device(torch.device("cuda"), ProcessPlace()) == torch.device("cuda")  # not under torchrun
    assert place_device(torch.device("cpu"), second) == torch.device("cpu")


def test_jobs_resolve_cpu_under_torchrun_as_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert process_device("cpu") == torch.device("cpu")
