"""The ``evaluate`` job: score a checkpoint's tissue maps on a labelled split, on this process's device."""

from __future__ import annotations

import os

import torch

from histo_daen.config.schema import EvaluateConfig
from histo_daen.devices import process_device
from histo_daen.evaluation.evaluate import EvaluationResult, evaluate

__all__ = ["run_evaluation"]


def run_evaluation(
    checkpoint: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    cfg: EvaluateConfig | None = None,
    *,
    device: torch.device | str = "auto",
    overwrite: bool = False,
    progress: bool = False,
) -> EvaluationResult:
    """Evaluate ``checkpoint`` on ``cfg.split`` of the dataset at ``data_root`` into ``output_dir``.

    ``device`` is resolved here ("auto": a CUDA GPU if present; under torchrun ``cuda:LOCAL_RANK``); everything
    else is :func:`histo_daen.evaluation.evaluate.evaluate`, whose errors it raises.
    """
    return evaluate(
        checkpoint,
        data_root,
        output_dir,
        cfg or EvaluateConfig(),
        device=process_device(device),
        overwrite=overwrite,
        progress=progress,
    )
