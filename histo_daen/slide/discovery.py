"""Turn what a user typed (files, folders, quoted globs) into a sorted list of slide files, and say what is wrong.

Cohort commands (``tile``, ``segment``) take many inputs; one bad input must not stop the others, so problems are
returned as errors beside the slides found, for the caller to report.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from histo_daen.errors import SlideError

__all__ = ["SLIDE_SUFFIXES", "SlideInputs", "find_slides"]

# File name endings of whole-slide formats OpenSlide or tiffslide read (lower case).
SLIDE_SUFFIXES = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".vms",
    ".vmu",
    ".scn",
    ".mrxs",
    ".svslide",
    ".bif",
    ".czi",
    ".dcm",
    ".qptiff",
)

_GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class SlideInputs:
    """The slides found and the inputs that could not be used.

    Attributes:
        slides: slide files, sorted by path, each once (the order ``--shard`` splits).
        problems: one :class:`SlideError` per unusable input (missing path, empty folder, unmatched glob).
    """

    slides: tuple[Path, ...]
    problems: tuple[SlideError, ...]


def _is_slide_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(SLIDE_SUFFIXES) and not path.name.startswith(".")


def _slides_in_folder(folder: Path) -> list[Path]:
    return sorted(child for child in folder.iterdir() if _is_slide_file(child))


def find_slides(inputs: Sequence[str | os.PathLike[str]]) -> SlideInputs:
    """Expand slide files, folders (their slide files, not recursive) and glob patterns.

    A file given by name is taken whatever its ending (``open_slide`` judges it); files found in folders or by
    globs must have a slide ending (:data:`SLIDE_SUFFIXES`), so masks and notes beside slides are skipped.
    """
    found: dict[Path, Path] = {}
    problems: list[SlideError] = []

    def add(path: Path) -> None:
        found.setdefault(path.resolve(), path)

    for raw in inputs:
        path = Path(raw)
        text = str(raw)
        if path.is_dir():
            slides = _slides_in_folder(path)
            if not slides:
                problems.append(
                    SlideError(path, "is a folder with no slide files in it", f"Slide names end in {_endings()}.")
                )
            for slide in slides:
                add(slide)
        elif path.exists():
            add(path)
        elif any(char in text for char in _GLOB_CHARACTERS):
            matches = sorted(Path(match) for match in glob.glob(text, recursive=True))
            slides = [m for m in matches if _is_slide_file(m)]
            for folder in (m for m in matches if m.is_dir()):
                slides += _slides_in_folder(folder)
            if not slides:
                problems.append(SlideError(path, "matches no slide files", "Check the pattern and the folder."))
            for slide in slides:
                add(slide)
        else:
            problems.append(SlideError(path, "does not exist", "Check the path and its spelling."))
    return SlideInputs(tuple(sorted(found.values(), key=str)), tuple(problems))


def _endings() -> str:
    return ", ".join(SLIDE_SUFFIXES[:4]) + ", ..."
