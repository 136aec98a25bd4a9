"""The tiling manifest: a CSV row per tile plus a JSON header; and the journal that makes tiling resumable.

``manifest.csv`` columns: ``slide, x, y, width, height`` (level-0 box), ``col, row, level, target_mpp,
tissue_fraction, path`` (relative to the manifest), ``bytes, sha256`` (of the tile file, to verify it later).
``manifest.json``: format version, package version, slide identity (name, size, header hash, ...), the
parameters, the grid geometry and counts. Nothing time-dependent: tiling twice gives byte-identical manifests.

``progress.csv`` (only while a job runs, inside ``<slide>.partial/``): one ``index,bytes,sha256`` line appended per
tile written; a line cut by a kill does not parse and is ignored, so its tile is simply written again.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histo_daen.atomic import atomic_write_text
from histo_daen.digest import file_sha256
from histo_daen.tiling.grid import Tile

__all__ = [
    "COLUMNS",
    "FORMAT_VERSION",
    "JOURNAL_NAME",
    "MANIFEST_CSV",
    "MANIFEST_JSON",
    "ManifestRow",
    "append_journal",
    "read_header",
    "read_journal",
    "read_manifest",
    "verify_tile_file",
    "write_header",
    "write_manifest",
]

FORMAT_VERSION = 1
MANIFEST_CSV = "manifest.csv"
MANIFEST_JSON = "manifest.json"
JOURNAL_NAME = "progress.csv"
COLUMNS = (
    "slide",
    "x",
    "y",
    "width",
    "height",
    "col",
    "row",
    "level",
    "target_mpp",
    "tissue_fraction",
    "path",
    "bytes",
    "sha256",
)

_JOURNAL_LINE = re.compile(r"^(\d+),(\d+),([0-9a-f]{64})$")


@dataclass(frozen=True)
class ManifestRow:
    """One tile of a manifest: its grid entry, its file (relative path) and the file's size and SHA-256."""

    tile: Tile
    path: str
    n_bytes: int
    sha256: str


def write_manifest(path: Path, slide_name: str, target_mpp: float, rows: Sequence[ManifestRow]) -> Path:
    """Write ``manifest.csv`` atomically (fsynced: it marks the tiles complete)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        x, y, width, height = row.tile.box_level0
        writer.writerow(
            [
                slide_name,
                x,
                y,
                width,
                height,
                row.tile.col,
                row.tile.row,
                row.tile.level,
                f"{target_mpp:g}",
                f"{row.tile.tissue_fraction:.6f}",
                row.path,
                row.n_bytes,
                row.sha256,
            ]
        )
    return atomic_write_text(path, buffer.getvalue())


def read_manifest(path: Path) -> list[dict[str, str]]:
    """The rows of a ``manifest.csv`` as dicts of strings (column -> value)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def verify_tile_file(path: Path, n_bytes: int, sha256: str) -> bool:
    """A tile file is there and has the size and SHA-256 (hex) its manifest row records."""
    try:
        if path.stat().st_size != n_bytes:
            return False
        return file_sha256(path) == sha256
    except OSError:
        return False


def write_header(path: Path, header: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` atomically: sorted keys, so equal headers are equal bytes."""
    return atomic_write_text(path, json.dumps(header, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_header(path: Path) -> dict[str, Any] | None:
    """A ``manifest.json``, or None when it is missing or not ours (unreadable, not a mapping)."""
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) and "parameters" in header else None


def append_journal(path: Path, entries: Iterable[tuple[int, int, str]]) -> None:
    """Append ``index,bytes,sha256`` lines for tiles just written (no fsync: see the module docstring)."""
    lines = "".join(f"{index},{n_bytes},{digest}\n" for index, n_bytes, digest in entries)
    if lines:
        with open(path, "a", encoding="ascii") as handle:
            handle.write(lines)


def read_journal(path: Path) -> dict[int, tuple[int, str]]:
    """``{tile index: (bytes, sha256)}`` from a journal; missing file -> empty; malformed lines are skipped."""
    entries: dict[int, tuple[int, str]] = {}
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return entries
    for line in text.splitlines():
        match = _JOURNAL_LINE.match(line)
        if match:
            entries[int(match.group(1))] = (int(match.group(2)), match.group(3))
    return entries
