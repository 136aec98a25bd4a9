"""Fixtures for the training tests: a tiny synthetic LUAD-HistoSeg folder and test-sized training configs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from histo_daen.config.load import load_config
from histo_daen.config.schema import TrainConfig
from histo_daen.data.synthetic_dataset import write_synthetic_luad

# Test-sized network and run: resnet18 at a quarter width, 64 px patches, no colour augmentation (fast), loaders
# in the test process, every step logged. The reference recipe's frozen BatchNorm keeps a split batch equal to a
# whole one (the scratch recipe, the default from random weights, trains BatchNorm on each micro-batch).
TINY = {
    "recipe": "reference",
    "model": {"backbone": "resnet18", "width": 0.25, "input_size": 64},
    "data": {"workers": 0},
    "augment": {"colour": "none"},
    "optim": {"batch_size": 4, "epochs": 1, "momentum": 0.9},
    "log_every": 1,
}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: under pytest-xdist two workers with torch's default thread count oversubscribe the
    cores, and OpenMP's waiting threads then slow small convolutions down by 10-50x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_luad_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic LUAD-HistoSeg folder: 8 training patches of 64 x 64 px, 2 val, 2 test."""
    root = tmp_path_factory.mktemp("tiny_luad") / "LUAD-synth"
    return write_synthetic_luad(root, n_train=8, n_val=2, n_test=2, seed=3, patch_size=64, workers=1).root


@pytest.fixture
def tiny_config(tiny_luad_root: Path) -> Callable[..., TrainConfig]:
    """``tiny_config("optim.epochs=2", ...)``: the test-sized config on the tiny dataset, with overrides."""

    def build(*overrides: str, **sections: Any) -> TrainConfig:
        base = load_config(TrainConfig, overrides={**TINY, "data": {**TINY["data"], "root": tiny_luad_root}})
        return load_config(TrainConfig, base=base, overrides=list(overrides)) if overrides else base

    return build
