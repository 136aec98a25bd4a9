"""LUAD-style patch folders (LUAD-HistoSeg, BCSS-WSSS): layout, labels in file names, and whole-folder validation.

Both datasets share one layout (reference.md §6.1, §6.6)::

    root/
      train/ (or training/)    <name>-[a b c d].png   patch-level labels only
      val/ (or valid/)         img/<name>.png  mask/<name>.png
      test/                    img/<name>.png  mask/<name>.png

Only ``*.png`` files count and dotfiles are skipped (stray files exist in some copies); images and masks pair by
their full file name. Validation reads every file once and reports every problem at once, before training starts.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from histo_daen.classes import ClassSet
from histo_daen.data.masks import read_mask
from histo_daen.errors import DatasetError
from histo_daen.progress import progress_bar

__all__ = [
    "SPLITS",
    "FolderLayout",
    "PatchRecord",
    "Problem",
    "Split",
    "check_image_file",
    "check_patch_folder",
    "find_split_folder",
    "format_problems",
    "label_from_mask",
    "scan_split",
]

logger = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
_SHOWN_PER_PROBLEM = 3  # file names quoted per kind of problem; the rest is a count


@dataclass(frozen=True)
class PatchRecord:
    """One patch of a dataset split.

    Attributes:
        image: the RGB PNG.
        label: patch-level label, one 0/1 per class in ``ClassSet`` order, or None (unlabelled val/test names).
        mask: the palette mask PNG (val/test), or None.
        name: the image's file name, unique within its split.
    """

    image: Path
    label: tuple[int, ...] | None
    mask: Path | None = None
    name: str = ""


@dataclass(frozen=True)
class FolderLayout:
    """What differs between LUAD-style datasets: folder aliases, label syntax and classes.

    Attributes:
        title: the dataset's name in messages ("LUAD-HistoSeg").
        class_set: classes in label/mask order.
        split_folders: accepted folder names per split, first preferred.
        label_bracket: finds the label in a file name; group "inner" is the text between the brackets.
        parse_label: "inner" text -> one 0/1 per class, or None when it is not a valid label.
        label_example: how a label is written, for messages ("-[1 0 0 1].png").
    """

    title: str
    class_set: ClassSet
    split_folders: dict[str, tuple[str, ...]]
    label_bracket: re.Pattern[str]
    parse_label: Callable[[str], tuple[int, ...] | None]
    label_example: str


# Problem kinds: (one, several); {n} is the number of classes, {exclude} the exclude index.
_KINDS: dict[str, tuple[str, str]] = {
    "no_label": ("file name without a label", "file names without a label"),
    "bad_label": ("malformed label (not {n} digits of 0 or 1)", "malformed labels (not {n} digits of 0 or 1)"),
    "zero_label": (
        "all-zero label (a patch must show at least one class)",
        "all-zero labels (a patch must show at least one class)",
    ),
    "no_mask": ("image without a mask", "images without a mask"),
    "no_image": ("mask without an image", "masks without an image"),
    "unreadable": ("unreadable PNG", "unreadable PNGs"),
    "colour_mask": (
        "mask that is a colour image, not class indices",
        "masks that are colour images, not class indices",
    ),
    "mask_size": ("mask whose size differs from its image", "masks whose size differs from their image"),
    "mask_index": ("mask with an index above {exclude}", "masks with an index above {exclude}"),
    "no_subfolders": ("split folder without img/ and mask/", "split folders without img/ and mask/"),
    "empty_split": ("split folder without any .png patch", "split folders without any .png patch"),
    # Tile datasets (histo_daen.data.tiles):
    "unknown_tile": ("label for a tile in no manifest", "labels for tiles in no manifest"),
    "duplicate_tile": ("tile labelled twice", "tiles labelled twice"),
    "missing_tile": ("tile file missing", "tile files missing"),
    "outside_root": ("path leading outside its folder", "paths leading outside their folder"),
    "changed_tile": (
        "tile whose size or SHA-256 differs from its manifest",
        "tiles whose size or SHA-256 differs from their manifest",
    ),
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file; problems of one kind are reported together."""

    kind: str  # a key of _KINDS, e.g. "no_label"
    path: Path
    detail: str = ""


@dataclass
class _Scan:
    records: list[PatchRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def find_split_folder(root: Path, split: Split, layout: FolderLayout) -> Path | None:
    """The folder of ``split`` under ``root`` (first existing alias), or None when there is none."""
    for name in layout.split_folders[split]:
        candidate = root / name
        if candidate.is_dir():
            return candidate
    return None


def _pngs(folder: Path) -> list[Path]:
    # Dotfiles (macOS "._x.png" resource forks) are not patches; sorted for a stable order on every machine.
    return sorted(p for p in folder.iterdir() if p.suffix == ".png" and not p.name.startswith(".") and p.is_file())


def _label_from_name(
    path: Path, layout: FolderLayout, *, required: bool
) -> tuple[tuple[int, ...] | None, Problem | None]:
    found = layout.label_bracket.search(path.name)
    if found is None:
        if required:
            return None, Problem("no_label", path)
        return None, None
    label = layout.parse_label(found.group("inner"))
    if label is None:
        return None, Problem("bad_label", path)
    if not any(label):
        return None, Problem("zero_label", path)
    return label, None


def _scan_train(folder: Path, layout: FolderLayout) -> _Scan:
    scan = _Scan()
    # TPRO-style copies keep the training patches in train/img/.
    images = _pngs(folder) or (_pngs(folder / "img") if (folder / "img").is_dir() else [])
    for image in images:
        label, problem = _label_from_name(image, layout, required=True)
        if problem is not None:
            scan.problems.append(problem)
        else:
            scan.records.append(PatchRecord(image=image, label=label, name=image.name))
    return scan


def _scan_labelled(folder: Path, layout: FolderLayout) -> _Scan:
    scan = _Scan()
    img_dir, mask_dir = folder / "img", folder / "mask"
    for sub in (img_dir, mask_dir):
        if not sub.is_dir():
            scan.problems.append(Problem("no_subfolders", sub))
    if scan.problems:
        return scan
    images = {p.name: p for p in _pngs(img_dir)}
    masks = {p.name: p for p in _pngs(mask_dir)}
    for name in sorted(set(masks) - set(images)):
        scan.problems.append(Problem("no_image", masks[name]))
    for name, image in images.items():
        if name not in masks:
            scan.problems.append(Problem("no_mask", image))
            continue
        label, problem = _label_from_name(image, layout, required=False)
        if problem is not None:
            scan.problems.append(problem)
            continue
        scan.records.append(PatchRecord(image=image, label=label, mask=masks[name], name=name))
    return scan


def scan_split(
    root: str | os.PathLike[str], split: Split, layout: FolderLayout
) -> tuple[list[PatchRecord], list[Problem]]:
    """List a split's patches from file names alone (no file is opened).

    Returns:
        The records (sorted by name) and the problems found in names and pairings.

    Raises:
        DatasetError: ``root`` or the split's folder does not exist.
    """
    base = Path(root)
    if not base.is_dir():
        raise DatasetError(base, f"is not a folder (expected a {layout.title} dataset)", _layout_hint(layout))
    folder = find_split_folder(base, split, layout)
    if folder is None:
        aliases = " or ".join(f"{name}/" for name in layout.split_folders[split])
        raise DatasetError(base, f"has no {aliases} folder", _layout_hint(layout))
    scan = _scan_train(folder, layout) if split == "train" else _scan_labelled(folder, layout)
    if not scan.records and not scan.problems:
        scan.problems.append(Problem("empty_split", folder))
    return scan.records, scan.problems


def check_image_file(path: Path) -> tuple[tuple[int, int] | None, Problem | None]:
    """Open an image file without decoding it: its (width, height), or the problem that it is unreadable."""
    try:
        with Image.open(path) as image:
            size_wh = image.size
            image.verify()  # walks every chunk and its CRC without decoding: catches truncated files
    except (OSError, SyntaxError, ValueError) as err:
        return None, Problem("unreadable", path, str(err).replace(f"'{path}'", "").strip())
    return size_wh, None


def _check_files(record: PatchRecord, layout: FolderLayout) -> list[Problem]:
    """Open the image (and mask) of one record: readable, sizes agree, mask indices in range."""
    problems: list[Problem] = []
    size_wh, unreadable = check_image_file(record.image)
    if unreadable is not None:
        return [unreadable]
    if record.mask is None:
        return problems
    try:
        mask = read_mask(record.mask)
    except DatasetError as err:
        kind = "colour_mask" if "not a palette" in err.problem else "unreadable"
        return [Problem(kind, record.mask)]
    if mask.shape[::-1] != size_wh:
        problems.append(Problem("mask_size", record.mask, f"{mask.shape[::-1]} vs {size_wh}"))
    top = int(mask.max()) if mask.size else 0
    if top > layout.class_set.exclude_index:
        problems.append(Problem("mask_index", record.mask, f"max {top}"))
    return problems


def _layout_hint(layout: FolderLayout) -> str:
    return (
        f"A {layout.title} folder holds train/<name>{layout.label_example} patches and val/ and test/ with img/ and "
        f"mask/ PNGs paired by name; label digits are in the order {' '.join(layout.class_set.codes)}."
    )


def format_problems(problems: Sequence[Problem], root: Path, class_set: ClassSet) -> str:
    """All problems as one line: per kind, a count and the first few files relative to ``root``."""
    by_kind: dict[str, list[Problem]] = {}
    for problem in problems:
        by_kind.setdefault(problem.kind, []).append(problem)
    parts = []
    for kind, items in by_kind.items():
        shown = []
        for item in items[:_SHOWN_PER_PROBLEM]:
            try:
                name = str(item.path.relative_to(root))
            except ValueError:
                name = str(item.path)
            shown.append(f"{name} ({item.detail})" if item.detail else name)
        more = f" and {len(items) - _SHOWN_PER_PROBLEM} more" if len(items) > _SHOWN_PER_PROBLEM else ""
        one, several = _KINDS[kind]
        noun = (one if len(items) == 1 else several).format(n=len(class_set), exclude=class_set.exclude_index)
        parts.append(f"{len(items)} {noun}: {', '.join(shown)}{more}")
    return "; ".join(parts)


def check_patch_folder(
    root: str | os.PathLike[str],
    layout: FolderLayout,
    *,
    splits: Sequence[Split] = SPLITS,
    required: Sequence[Split] = ("train",),
    open_files: bool = True,
    threads: int = 8,
    progress: bool = False,
) -> dict[Split, list[PatchRecord]]:
    """Scan (and optionally open) every file of a dataset, then raise one error listing every problem.

    Args:
        root: the dataset folder.
        layout: which dataset (``histo_daen.data.luad.LUAD_LAYOUT``, ``histo_daen.data.bcss.BCSS_LAYOUT``).
        splits: the splits to scan; a split that is not in ``required`` and has no folder is skipped.
        required: splits whose folder must exist.
        open_files: also open every PNG (truncated files, mask sizes and indices); names only when False.
        threads: file checks run in a thread pool (PNG decoding releases the GIL).
        progress: show a tqdm bar while files are opened.

    Returns:
        The records per split present.

    Raises:
        DatasetError: naming the dataset folder, each kind of problem with a count and the first files, and what to
            do. Nothing is opened for training before the whole folder is known to be usable.
    """
    base = Path(root)
    records: dict[Split, list[PatchRecord]] = {}
    problems: list[Problem] = []
    for split in splits:
        if split not in required and base.is_dir() and find_split_folder(base, split, layout) is None:
            continue
        split_records, split_problems = scan_split(base, split, layout)
        records[split] = split_records
        problems += split_problems
    if open_files:
        every = [r for split_records in records.values() for r in split_records]
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            checked = pool.map(lambda r: _check_files(r, layout), every)
            for found in progress_bar(
                checked, total=len(every), unit="file", desc="checking dataset", enabled=progress
            ):
                problems += found
    if problems:
        raise DatasetError(
            base,
            f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in the {layout.title} folder: "
            + format_problems(problems, base, layout.class_set),
            "Fix or remove these files, then run again. " + _layout_hint(layout),
        )
    for split, split_records in records.items():
        logger.info("%s %s: %d patches", layout.title, split, len(split_records))
    return records


def label_from_mask(mask: np.ndarray, n_classes: int) -> tuple[int, ...]:
    """Classes present in a mask (exclude/white ignored): the optimistic label of an unlabelled val/test patch."""
    present = np.bincount(mask.ravel(), minlength=n_classes)[:n_classes] > 0
    return tuple(int(v) for v in present)
