"""Manifest and journal: round trips, torn journal lines, and what counts as a change of parameters."""

from __future__ import annotations

from pathlib import Path

from histo_daen.tiling import Tile
from histo_daen.tiling.manifest import (
    COLUMNS,
    ManifestRow,
    append_journal,
    read_header,
    read_journal,
    read_manifest,
    write_header,
    write_manifest,
)

DIGEST = "ab" * 32


def test_manifest_round_trip_has_the_documented_columns(tmp_path: Path) -> None:
    rows = [ManifestRow(Tile(2, 1, (896, 448, 448, 448), 1, 0.734567891), "tiles/s_x896_y448.png", 1234, DIGEST)]
    write_manifest(tmp_path / "manifest.csv", "s.svs", 1.0, rows)
    (row,) = read_manifest(tmp_path / "manifest.csv")
    assert tuple(row) == COLUMNS
    assert row == {
        "slide": "s.svs",
        "x": "896",
        "y": "448",
        "width": "448",
        "height": "448",
        "col": "2",
        "row": "1",
        "level": "1",
        "target_mpp": "1",
        "tissue_fraction": "0.734568",
        "path": "tiles/s_x896_y448.png",
        "bytes": "1234",
        "sha256": DIGEST,
    }


def test_journal_ignores_a_line_cut_by_a_kill(tmp_path: Path) -> None:
    journal = tmp_path / "progress.csv"
    append_journal(journal, [(0, 10, DIGEST), (1, 11, DIGEST)])
    with open(journal, "a", encoding="ascii") as handle:
        handle.write("2,12,abab")  # the process died mid-line
    assert read_journal(journal) == {0: (10, DIGEST), 1: (11, DIGEST)}
    assert read_journal(tmp_path / "absent.csv") == {}


def test_header_is_written_with_sorted_keys_and_read_back(tmp_path: Path) -> None:
    write_header(tmp_path / "manifest.json", {"parameters": {"b": 1, "a": 2}, "n_tiles": 3})
    assert read_header(tmp_path / "manifest.json") == {"parameters": {"a": 2, "b": 1}, "n_tiles": 3}
    assert (tmp_path / "manifest.json").read_text().index('"a"') < (tmp_path / "manifest.json").read_text().index('"b"')
    (tmp_path / "other.json").write_text("[1, 2]")
    assert read_header(tmp_path / "other.json") is None
    assert read_header(tmp_path / "missing.json") is None
