"""The ``tile`` job: every slide of a cohort into ``OUTPUT/<name>/`` (tiles, manifest, pictures), one bad slide
stopping none.

Slides, shards, folder names and failures follow :mod:`histo_daen.jobs.cohort`; each slide's folder is written,
resumed and verified by :func:`histo_daen.tiling.tile_slide`, whose module docstring shows the folder's layout.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Literal

from histo_daen.config.schema import TileConfig
from histo_daen.jobs.cohort import CohortReport, Shard, SlideOutcome, SlideTask, run_cohort
from histo_daen.resources import require_workers
from histo_daen.tiling.folder import SlideTilingResult, tile_slide

__all__ = ["TilingReport", "tile_cohort"]

TilingReport = CohortReport[SlideTilingResult]


def tile_cohort(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    config: TileConfig | None = None,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    shard: Shard | str | None = None,
    progress: bool = False,
    on_outcome: Callable[[SlideOutcome[SlideTilingResult]], None] | None = None,
) -> TilingReport:
    """Tile a cohort: every slide of ``inputs`` (files, folders, globs) into its own folder under ``output``.

    Args:
        inputs: slide files, folders of slides, or glob patterns.
        output: the cohort output folder (one sub-folder per slide, named by :mod:`histo_daen.jobs.cohort`).
        config: tiling settings.
        workers: reader processes per slide (None: all cores; 0: in this process).
        overwrite: replace outputs made with other parameters.
        shard: tile only this shard of the sorted slides (``Shard`` or ``"K/N"``; default: torchrun's rank).
        progress: tqdm bars.
        on_outcome: called with each slide's outcome as soon as it is known (the CLI prints them).

    Returns:
        The :class:`~histo_daen.jobs.cohort.CohortReport`; the ``result`` of a tiled slide is its
        :class:`~histo_daen.tiling.folder.SlideTilingResult`.

    Raises:
        ConfigError: no inputs. PathError: the output folder cannot be written (nothing is tiled then).
        ResourceLimitError: more workers than this machine can run (before any output is made).
    """
    config = config or TileConfig()
    if workers is not None:
        require_workers(workers, setting="--workers")

    def work(task: SlideTask) -> tuple[Literal["done", "skipped"], SlideTilingResult]:
        result = tile_slide(
            task.slide,
            task.folder,
            config,
            workers=workers,
            overwrite=overwrite,
            progress=progress,
            progress_label=task.label,
        )
        return ("done" if result.n_written or not result.n_skipped else "skipped"), result

    return run_cohort(inputs, output, work, shard=shard, progress=progress, on_outcome=on_outcome)
