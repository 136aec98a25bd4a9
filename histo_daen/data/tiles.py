"""Training on your own slides: the tiles of ``histo-daen tile`` plus a CSV of patch labels (the ``tiles`` dataset).

``data.root`` is a tiling output: one slide's folder holding ``manifest.csv``, or a cohort folder with one such
folder per slide. ``data.labels_csv`` names the labelled tiles::

    path,TE,NEC,LYM,TAS
    slide_a/tiles/r0003_c0007.png,1,0,0,1
    slide_b/tiles/r0010_c0002.png,0,0,1,0

``path`` is the tile file relative to ``data.root`` (the manifest's ``path`` column, below its slide's folder for a
cohort); one 0/1 column per class code of the LUAD class set (TE, NEC, LYM, TAS), any column order. Tiles without a
row are not used. There are no masks, so this dataset has a training split only.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from histo_daen.classes import LUAD, ClassSet
from histo_daen.data.patch_folder import PatchRecord, Problem, Split, check_image_file, format_problems
from histo_daen.errors import DatasetError
from histo_daen.tiling.manifest import MANIFEST_CSV, read_manifest

__all__ = ["check_tiles", "find_manifests"]

_PATH_COLUMN = "path"


def find_manifests(root: Path) -> list[Path]:
    """``root/manifest.csv`` (one slide) or ``root/*/manifest.csv`` (a cohort), sorted."""
    if (root / MANIFEST_CSV).is_file():
        return [root / MANIFEST_CSV]
    return sorted(p for p in root.glob(f"*/{MANIFEST_CSV}") if p.is_file())


def _tiles_in_manifests(root: Path, manifests: Sequence[Path]) -> set[str]:
    """Every tile file of the manifests, as a POSIX path relative to ``root``."""
    tiles: set[str] = set()
    for manifest in manifests:
        for row in read_manifest(manifest):
            if row.get("path"):
                tiles.add((manifest.parent / row["path"]).relative_to(root).as_posix())
    return tiles


def _read_labels(csv_path: Path, class_set: ClassSet) -> list[dict[str, str]]:
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(
            csv_path, f"cannot be read as a CSV file ({err})", "Pass a UTF-8 CSV of tile labels."
        ) from err
    missing = [c for c in (_PATH_COLUMN, *class_set.codes) if c not in columns]
    if missing:
        raise DatasetError(
            csv_path,
            f"has no column {', '.join(missing)} (columns: {', '.join(columns) or 'none'})",
            f"The label CSV needs a header '{_PATH_COLUMN},{','.join(class_set.codes)}' and one row per tile.",
        )
    return rows


def check_tiles(
    root: str | os.PathLike[str],
    labels_csv: str | os.PathLike[str] | None,
    *,
    splits: Sequence[Split] = ("train",),
    class_set: ClassSet = LUAD,
    open_files: bool = True,
    progress: bool = False,
) -> dict[Split, list[PatchRecord]]:
    """Validate a tiling output and its label CSV; list the labelled tiles as training records.

    Raises:
        DatasetError: no manifest, an unreadable CSV or missing columns, or (all listed at once) labels that are not
            0/1, all-zero labels, tiles labelled twice, labels for tiles in no manifest, tile files missing or
            unreadable. Also when a split other than ``train`` is asked for (tiles have no masks).
    """
    base = Path(root)
    other = [s for s in splits if s != "train"]
    if other:
        raise DatasetError(base, f"a tiles dataset has no {'/'.join(other)} split (tiles have no masks)", "Train only.")
    if labels_csv is None:
        raise DatasetError(base, "a tiles dataset needs a label CSV", "Pass data.labels_csv=labels.csv.")
    manifests = find_manifests(base)
    if not manifests:
        raise DatasetError(
            base,
            f"holds no {MANIFEST_CSV} (neither here nor in a subfolder)",
            "Point data.root at the output of histo-daen tile (a slide's folder or the cohort folder).",
        )
    known = _tiles_in_manifests(base, manifests)
    csv_path = Path(labels_csv)
    problems: list[Problem] = []
    records: list[PatchRecord] = []
    seen: set[str] = set()
    for row in _read_labels(csv_path, class_set):
        relative = Path(row[_PATH_COLUMN].strip()).as_posix()
        tile = base / relative
        if relative in seen:
            problems.append(Problem("duplicate_tile", tile))
            continue
        seen.add(relative)
        values = [row[code].strip() for code in class_set.codes]
        if any(v not in ("0", "1") for v in values):
            problems.append(Problem("bad_label", tile, ",".join(values)))
            continue
        label = tuple(int(v) for v in values)
        if not any(label):
            problems.append(Problem("zero_label", tile))
        elif relative not in known:
            problems.append(Problem("unknown_tile", tile))
        elif not tile.is_file():
            problems.append(Problem("missing_tile", tile))
        else:
            records.append(PatchRecord(image=tile, label=label, name=relative))
    if open_files:
        with ThreadPoolExecutor(max_workers=8) as pool:
            checked = pool.map(lambda r: check_image_file(r.image)[1], records)
            problems += [p for p in tqdm(checked, total=len(records), disable=not progress) if p is not None]
    if problems:
        raise DatasetError(
            base,
            f"{len(problems)} problem{'s' if len(problems) > 1 else ''} with the tile labels of {csv_path.name}: "
            + format_problems(problems, base, class_set),
            f"Fix the rows of {csv_path}: '{_PATH_COLUMN}' is the tile file relative to {base}, then one 0/1 per class "
            f"({', '.join(class_set.codes)}) with at least one 1.",
        )
    if not records:
        raise DatasetError(csv_path, "labels no tile", "Add rows for the tiles to train on.")
    return {"train": sorted(records, key=lambda r: r.name)}
