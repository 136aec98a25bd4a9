"""One runner for cohort jobs (``tile``, ``segment``): which slides, which shard, which folder, what failed.

Every rule a cohort job follows is made here, once:

- **Slides**: :func:`~histo_daen.slide.discovery.find_slides` expands files, folders and glob patterns into a sorted,
  unique list; inputs that name no slide (a typo, an empty folder) are reported as failures by shard 0 alone, so a
  cohort split over N processes reports each once.
- **Output folder**: created and proven writable before any slide is touched (:func:`prepare_output_folder`).
- **Folder names**: each slide writes ``OUTPUT/<stem>/``; slides whose stems collide (``a.svs``, ``a.tiff``) get
  ``a_svs/`` and ``a_tiff/``; two files of the same name in different folders cannot both have one, so every such
  slide after the first (in sorted order) fails, naming the other. Names are computed over the whole cohort, so
  every shard agrees on them.
- **Shards**: ``--shard K/N`` (Slurm arrays, several machines) or, under torchrun, ``RANK/WORLD_SIZE``; round robin
  over the sorted slides, with no coordinator: each process writes only its own slides' folders.
- **Failure isolation**: whatever one slide's job raises becomes a failed :class:`SlideOutcome` (message naming
  the slide) and the others go on: a :class:`~histo_daen.errors.HistoDaenError` in its own words, anything else
  (a bug, memory running out) as "unexpected", its traceback in the log at debug level (``-vv``). Only an
  interruption (Ctrl-C, SIGTERM) stops the cohort.
- **Progress**: ``on_outcome`` is called with each slide's outcome as soon as it is known; ``progress`` shows a
  bar over the slides.

The jobs (:mod:`histo_daen.jobs.tile`, :mod:`histo_daen.jobs.segment`) give :func:`run_cohort` the work for one
slide; the library below knows nothing of cohorts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar

from histo_daen.atomic import prepare_output_folder
from histo_daen.errors import ConfigError, HistoDaenError, SlideError
from histo_daen.progress import progress_bar
from histo_daen.slide.discovery import find_slides
from histo_daen.torchrun import ProcessPlace, process_place

__all__ = [
    "CohortReport",
    "Shard",
    "SlideOutcome",
    "SlideTask",
    "output_folder_names",
    "parse_shard",
    "resolve_shard",
    "run_cohort",
    "shard_items",
]

logger = logging.getLogger(__name__)

R = TypeVar("R")
T = TypeVar("T")
Status = Literal["done", "skipped", "failed"]


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


def resolve_shard(shard: Shard | str | None, place: ProcessPlace | None = None) -> Shard | None:
    """The shard this process works on: the one asked for, else torchrun's ``RANK/WORLD_SIZE``, else all slides."""
    if isinstance(shard, str):
        return parse_shard(shard)
    if shard is not None:
        return shard
    place = process_place() if place is None else place
    return Shard(place.rank, place.world_size) if place.under_torchrun else None


def shard_items(items: Sequence[T], shard: Shard | None) -> list[T]:
    """The items of one shard, round robin over the given order (callers pass a sorted, stable list)."""
    if shard is None:
        return list(items)
    return [item for position, item in enumerate(items) if position % shard.count == shard.index]


def output_folder_names(paths: Sequence[Path]) -> tuple[dict[Path, str], dict[Path, SlideError]]:
    """Each slide's output folder name, and the slides that cannot have one (same file name as an earlier one).

    Returns:
        ``({slide: name}, {slide: error})``: the name is the stem, or ``<stem>_<suffix>`` where stems collide
        (``a.svs``, ``a.tiff``); a slide whose name is already taken (``x/a.svs``, ``y/a.svs``) gets an error
        naming the slide that has it.
    """
    suffixes: dict[str, set[str]] = {}
    for path in paths:
        suffixes.setdefault(path.stem, set()).add(path.suffix.lower())
    names: dict[Path, str] = {}
    clashes: dict[Path, SlideError] = {}
    taken: dict[str, Path] = {}
    for path in paths:
        collide = len(suffixes[path.stem]) > 1
        name = f"{path.stem}_{path.suffix.lstrip('.').lower()}" if collide else path.stem
        if name in taken:
            clashes[path] = SlideError(
                path,
                f"has the same file name as {taken[name]}: both would write the output folder '{name}'",
                "Rename one, or run them into separate output folders.",
            )
        else:
            taken[name] = path
            names[path] = name
    return names, clashes


@dataclass(frozen=True)
class SlideTask:
    """One slide of a cohort, as handed to a job.

    Attributes:
        slide: the slide file.
        folder: its output folder, ``OUTPUT/<name>`` (not created yet).
        number: 1-based position among this shard's slides.
        total: slides in this shard.
    """

    slide: Path
    folder: Path
    number: int
    total: int

    @property
    def label(self) -> str:
        """``"[2/10] slide.svs"``: what progress bars show."""
        return f"[{self.number}/{self.total}] {self.slide.name}"


@dataclass(frozen=True)
class SlideOutcome(Generic[R]):
    """What happened to one input of a cohort.

    Attributes:
        slide: the input (a slide file, or an input that named no slide).
        folder: its output folder (None when it has none: an unusable input or a name clash).
        status: "done" (processed now), "skipped" (an earlier run finished it) or "failed".
        error: the one-line message when failed; it names the slide.
        result: what the job returned for the slide (None when failed).
    """

    slide: Path
    folder: Path | None
    status: Status
    error: str | None = None
    result: R | None = None


@dataclass(frozen=True)
class CohortReport(Generic[R]):
    """Every input of this shard, in order: unusable inputs (shard 0), then the shard's slides.

    Attributes:
        outcomes: one per input.
        output: the cohort's output folder.
        shard: the shard this process handled (None: all slides).
        table: a table over the whole cohort the job wrote, if any (``segment``: ``summary.csv``).
    """

    outcomes: tuple[SlideOutcome[R], ...] = ()
    output: Path = Path(".")
    shard: Shard | None = None
    table: Path | None = None

    @property
    def failed(self) -> list[SlideOutcome[R]]:
        return [outcome for outcome in self.outcomes if outcome.status == "failed"]

    @property
    def succeeded(self) -> list[SlideOutcome[R]]:
        return [outcome for outcome in self.outcomes if outcome.status != "failed"]


def _failure(slide: Path, folder: Path | None, err: Exception) -> SlideOutcome[R]:
    if not isinstance(err, HistoDaenError):
        logger.debug("unexpected error on %s", slide, exc_info=err)
        first_line = str(err).splitlines()[0] if str(err) else "no message"
        err = HistoDaenError(
            f"{slide}: unexpected {type(err).__name__} ({first_line}); the other slides went on. This is a bug in "
            "histo-daen: please report it with the traceback that -vv prints"
        )
    message = str(err)
    if slide.name not in message:  # e.g. a config error: say which slide it stopped
        message = f"{slide}: {message}"
    return SlideOutcome(slide, folder, "failed", error=message)


def run_cohort(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    work: Callable[[SlideTask], tuple[Literal["done", "skipped"], R]],
    *,
    shard: Shard | str | None = None,
    progress: bool = False,
    on_start: Callable[[Path], object] | None = None,
    on_outcome: Callable[[SlideOutcome[R]], None] | None = None,
    on_failure: Callable[[SlideTask, str], None] | None = None,
) -> CohortReport[R]:
    """Run ``work`` for every slide of this shard of ``inputs``, each in its own output folder (module docstring).

    Args:
        inputs: slide files, folders of slides, or glob patterns.
        output: the cohort output folder (created).
        work: the job for one slide: ``work(task) -> ("done" | "skipped", result)``; it raises a
            :class:`~histo_daen.errors.HistoDaenError` for a slide it cannot process.
        shard: ``Shard``, ``"K/N"``, or None (torchrun's rank, else every slide).
        progress: a bar over the slides (when there are several).
        on_start: called with the output folder once it is ready, before any slide (e.g. to write ``config.yaml``).
        on_outcome: called with each outcome as soon as it is known (the CLI prints it).
        on_failure: called for a slide that failed in ``work`` (e.g. to record ``failed.json`` in its folder).

    Returns:
        The :class:`CohortReport`.

    Raises:
        ConfigError: no inputs were given, or the shard is malformed.
        PathError: the output folder cannot be created or written (nothing is processed then).
    """
    if not inputs:
        raise ConfigError("no slides given: pass slide files, folders or glob patterns")
    chosen = resolve_shard(shard)
    root = prepare_output_folder(Path(output))
    found = find_slides(inputs)
    names, clashes = output_folder_names(found.slides)
    if on_start is not None:
        on_start(root)
    outcomes: list[SlideOutcome[R]] = []

    def note(outcome: SlideOutcome[R]) -> None:
        outcomes.append(outcome)
        if outcome.status == "failed":
            logger.debug("slide failed, going on with the others: %s", outcome.error)
        if on_outcome is not None:
            on_outcome(outcome)

    if chosen is None or chosen.index == 0:
        for problem in found.problems:
            note(_failure(problem.path, None, problem))
    slides = shard_items(found.slides, chosen)
    bar = progress_bar(slides, unit="slide", desc="slides", enabled=progress and len(slides) >= 2)
    for number, slide in enumerate(bar, start=1):
        if slide in clashes:
            note(_failure(slide, None, clashes[slide]))
            continue
        task = SlideTask(slide, root / names[slide], number, len(slides))
        try:
            status, result = work(task)
        except Exception as err:  # one slide never stops the others (KeyboardInterrupt is no Exception)
            outcome: SlideOutcome[R] = _failure(slide, task.folder, err)
            if on_failure is not None:
                on_failure(task, outcome.error or "")
        else:
            outcome = SlideOutcome(slide, task.folder, status, result=result)
        note(outcome)
    return CohortReport(tuple(outcomes), root, chosen)
