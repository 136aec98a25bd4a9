"""Errors a user can cause. Each names the file or key, what is wrong, and what to do.

The CLI prints any :class:`HistoDaenError` as one ``Error: ...`` line with exit code 1 and no traceback;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "HistoDaenError",
    "MissingResolutionError",
    "NoTissueError",
    "OutputExistsError",
    "PathError",
    "ResourceLimitError",
    "SlideError",
    "TrainingDivergedError",
    "WeightsError",
]


class HistoDaenError(Exception):
    """Base of every error caused by input, options or files rather than by a bug."""


class ConfigError(HistoDaenError, ValueError):
    """A configuration file, key or option value is invalid. The message names the key and the valid choices."""


class ResourceLimitError(ConfigError):
    """A setting asks for more than this machine has (worker processes, memory, disk); the message gives the
    estimate, the bound and what to change. Raised before anything is allocated or started."""


class TrainingDivergedError(HistoDaenError):
    """Training produced a non-finite loss or gradient; the run stopped before the optimiser step applied it."""


class PathError(HistoDaenError):
    """A file or folder cannot be used: which path, what is wrong, what to do."""

    def __init__(self, path: str | os.PathLike[str], problem: str, hint: str = "") -> None:
        # All arguments go into Exception.args so the error pickles intact from a worker process.
        super().__init__(str(path), problem, hint)
        self.path, self.problem, self.hint = Path(path), problem, hint

    def __str__(self) -> str:
        problem = self.problem.rstrip(".")
        return f"{self.path}: {problem}." + (f" {self.hint}" if self.hint else "")


class SlideError(PathError):
    """A slide cannot be opened or read (missing, not a slide, truncated, corrupt, too small)."""


class MissingResolutionError(SlideError):
    """A slide has no usable microns-per-pixel metadata and none was given."""


class NoTissueError(SlideError):
    """The tissue detector found no tissue on a slide."""


class DatasetError(PathError):
    """A dataset folder does not have the expected layout, names or masks."""


class CheckpointError(PathError):
    """A checkpoint is missing, corrupt, not ours, or was made with another configuration."""


class WeightsError(PathError):
    """A pretrained-weights file is unreadable or does not fit the model."""


class OutputExistsError(PathError):
    """An output exists and would be replaced; the user must pass --overwrite (or resume with equal parameters)."""
