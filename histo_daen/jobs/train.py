"""The ``train`` job: one training run on this process's device, on the CPU, one GPU or under torchrun.

Resume, run-folder and torchrun rules live in :func:`histo_daen.training.loop.train`; the job adds what an entry
point decides: the device (``auto``; under torchrun ``cuda:LOCAL_RANK``) and which process reports the result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from histo_daen.config.schema import TrainConfig
from histo_daen.devices import process_device
from histo_daen.torchrun import process_place
from histo_daen.training.loop import TrainResult, train

__all__ = ["TrainingRun", "run_training"]


@dataclass(frozen=True)
class TrainingRun:
    """A finished run, and whether this process is the one that reports it (rank 0 of a torchrun launch)."""

    result: TrainResult
    reports: bool


def run_training(
    cfg: TrainConfig,
    output_dir: str | os.PathLike[str],
    *,
    device: torch.device | str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> TrainingRun:
    """Train ``cfg`` into ``output_dir`` (``last.pt``, ``config.yaml``, ``metrics.jsonl``); see ``training.loop.train``.

    Raises:
        OutputExistsError, DatasetError, CheckpointError, ConfigError: as :func:`histo_daen.training.loop.train`.
    """
    result = train(
        cfg, output_dir=output_dir, device=process_device(device), resume=resume, overwrite=overwrite, progress=progress
    )
    return TrainingRun(result, reports=process_place().is_main)
