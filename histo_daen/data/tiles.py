"""Training on your own slides: the tiles of ``histo-daen tile`` plus a CSV of patch labels (the ``tiles`` dataset).

``data.root`` is a tiling output: one slide's folder holding ``manifest.csv``, or a cohort folder with one such
folder per slide. ``data.labels_csv`` names the labelled tiles::

    path,TE,NEC,LYM,TAS
    slide_a/tiles/r0003_c0007.png,1,0,0,1
    slide_b/tiles/r0010_c0002.png,0,0,1,0

``path`` is the tile file relative to ``data.root`` (the manifest's ``path`` column, below its slide's folder for a
cohort); one 0/1 column per class code of the LUAD class set (TE, NEC, LYM, TAS), any column order. Tiles without a
row are not used. There are no masks, so this dataset has a training split only.

Paths read from these files stay inside their folder: a label path inside ``data.root``, a manifest path inside its
slide's folder. An absolute path, a ``..`` step or a symlink that leads out is reported as a problem, never read.
With ``data.verify=true`` every labelled tile's size and SHA-256 are checked against its manifest row (reads
every tile once).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath, PureWindowsPath

from histo_daen.classes import LUAD, ClassSet
from histo_daen.data.patch_folder import PatchRecord, Problem, Split, check_image_file, format_problems
from histo_daen.errors import DatasetError
from histo_daen.progress import progress_bar
from histo_daen.tiling.manifest import MANIFEST_CSV, read_manifest, verify_tile_file

__all__ = ["check_tiles", "confined_path", "find_manifests"]

_PATH_COLUMN = "path"


def find_manifests(root: Path) -> list[Path]:
    """``root/manifest.csv`` (one slide) or ``root/*/manifest.csv`` (a cohort), sorted."""
    if (root / MANIFEST_CSV).is_file():
        return [root / MANIFEST_CSV]
    return sorted(p for p in root.glob(f"*/{MANIFEST_CSV}") if p.is_file())


def confined_path(folder: Path, relative: str) -> tuple[Path, str | None]:
    """``folder / relative`` and, when that path leads outside ``folder``, why (else None).

    A path read from a file (a label CSV, a manifest) may name only files inside its folder: no absolute path (POSIX
    or Windows), no ``..`` step, and no symlink on the way that resolves outside.
    """
    text = relative.strip()
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or PureWindowsPath(text).drive:
        return Path(text), "an absolute path"
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if ".." in parts:
        return folder / text, "a '..' step"
    candidate = folder / text
    if not candidate.resolve().is_relative_to(folder.resolve()):
        return candidate, "a symlink leading out"
    return candidate, None


def _tiles_in_manifests(root: Path, manifests: Sequence[Path]) -> tuple[dict[str, tuple[str, str]], list[Problem]]:
    """Every tile file of the manifests, as a POSIX path relative to ``root`` -> its manifest (bytes, sha256).

    Rows whose path leads outside their slide's folder are problems, not tiles.
    """
    tiles: dict[str, tuple[str, str]] = {}
    problems: list[Problem] = []
    for manifest in manifests:
        try:
            rows = read_manifest(manifest)
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise DatasetError(
                manifest, f"cannot be read as a tiling manifest ({err})", "Tile the slide again with histo-daen tile."
            ) from err
        for row in rows:
            if not row.get("path"):
                continue
            tile, outside = confined_path(manifest.parent, row["path"])
            if outside is not None:
                problems.append(Problem("outside_root", tile, f"{outside}, in {manifest.relative_to(root)}"))
                continue
            tiles[tile.relative_to(root).as_posix()] = (row.get("bytes") or "", row.get("sha256") or "")
    return tiles, problems


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
    verify: bool = False,
    progress: bool = False,
) -> dict[Split, list[PatchRecord]]:
    """Validate a tiling output and its label CSV; list the labelled tiles as training records.

    Args:
        verify: also check every labelled tile's size and SHA-256 against its manifest row.

    Raises:
        DatasetError: no manifest, an unreadable CSV or missing columns, or (all listed at once) labels that are not
            0/1, all-zero labels, tiles labelled twice, labels for tiles in no manifest, paths leading outside their
            folder, tile files missing or unreadable (or, with ``verify``, changed since tiling). Also when a split
            other than ``train`` is asked for (tiles have no masks).
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
    known, problems = _tiles_in_manifests(base, manifests)
    n_manifest_problems = len(problems)
    csv_path = Path(labels_csv)
    records: list[PatchRecord] = []
    seen: set[str] = set()
    for row in _read_labels(csv_path, class_set):
        tile, outside = confined_path(base, row[_PATH_COLUMN] or "")
        if outside is not None:
            problems.append(Problem("outside_root", tile, outside))
            continue
        relative = tile.relative_to(base).as_posix()
        if relative in seen:
            problems.append(Problem("duplicate_tile", tile))
            continue
        seen.add(relative)
        values = [(row[code] or "").strip() for code in class_set.codes]  # a short row fills in None
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
    if verify:

        def changed(record: PatchRecord) -> Problem | None:
            n_bytes, sha256 = known[record.name]
            intact = n_bytes.isdigit() and verify_tile_file(record.image, int(n_bytes), sha256)
            return None if intact else Problem("changed_tile", record.image)

        with ThreadPoolExecutor(max_workers=8) as pool:
            problems += [p for p in pool.map(changed, records) if p is not None]
    if open_files:
        with ThreadPoolExecutor(max_workers=8) as pool:
            checked = pool.map(lambda r: check_image_file(r.image)[1], records)
            problems += [p for p in progress_bar(checked, total=len(records), enabled=progress) if p is not None]
    if problems:
        hints = []
        if n_manifest_problems or any(p.kind == "changed_tile" for p in problems):
            hints.append("Tile the slides again (histo-daen tile --overwrite) for the manifest and tile problems.")
        if any(p.kind != "changed_tile" for p in problems[n_manifest_problems:]):
            hints.append(
                f"Fix the rows of {csv_path}: '{_PATH_COLUMN}' is the tile file relative to {base}, then one 0/1 per "
                f"class ({', '.join(class_set.codes)}) with at least one 1."
            )
        raise DatasetError(
            base,
            f"{len(problems)} problem{'s' if len(problems) > 1 else ''} with the tiles and the labels of "
            f"{csv_path.name}: " + format_problems(problems, base, class_set),
            " ".join(hints),
        )
    if not records:
        raise DatasetError(csv_path, "labels no tile", "Add rows for the tiles to train on.")
    return {"train": sorted(records, key=lambda r: r.name)}
