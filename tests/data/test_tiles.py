from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from histo_daen.config.schema import DataConfig, TileConfig
from histo_daen.data.registry import load_splits
from histo_daen.data.tiles import check_tiles
from histo_daen.errors import DatasetError
from histo_daen.tiling import tile_slide
from histo_daen.tiling.manifest import read_manifest


@pytest.fixture(scope="module")
def tiled(tiny_slide: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cohort tiling output (one slide) of 64 px tiles at 2 um/px."""
    output = tmp_path_factory.mktemp("tiled") / "tiles"
    tile_slide(tiny_slide.path, output / "tiny", TileConfig(target_mpp=2.0, tile_size=64), workers=0)
    return output


def _tile_paths(root: Path) -> list[str]:
    (manifest,) = root.glob("*/manifest.csv")
    return [(manifest.parent / row["path"]).relative_to(root).as_posix() for row in read_manifest(manifest)]


def _write_labels(path: Path, rows: list[tuple[str, str, str, str, str]], header: str = "path,TE,NEC,LYM,TAS") -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header.split(","))
        writer.writerows(rows)
    return path


def test_labelled_tiles_of_a_tiling_output_become_training_records(tiled: Path, tmp_path: Path) -> None:
    tiles = _tile_paths(tiled)
    labels = _write_labels(tmp_path / "labels.csv", [(tiles[0], "1", "0", "0", "1"), (tiles[2], "0", "0", "1", "0")])
    records = load_splits(DataConfig(dataset="tiles", root=tiled, labels_csv=labels))["train"]
    assert [(r.name, r.label) for r in records] == sorted([(tiles[0], (1, 0, 0, 1)), (tiles[2], (0, 0, 1, 0))])
    assert all(r.image.is_file() and r.mask is None for r in records)


def test_label_problems_are_reported_together(tiled: Path, tmp_path: Path) -> None:
    tiles = _tile_paths(tiled)
    rows = [
        (tiles[0], "1", "0", "0", "1"),
        (tiles[0], "1", "0", "0", "1"),
        (tiles[1], "1", "0", "2", "0"),
        (tiles[2], "0", "0", "0", "0"),
        ("other/tile.png", "1", "0", "0", "0"),
    ]
    labels = _write_labels(tmp_path / "labels.csv", rows)
    with pytest.raises(DatasetError) as caught:
        check_tiles(tiled, labels)
    message = str(caught.value)
    assert "4 problems with the tiles and the labels of labels.csv" in message
    for part in ("1 tile labelled twice", "1 malformed label", "1 all-zero label", "1 label for a tile in no manifest"):
        assert part in message


def test_missing_class_columns_are_named(tiled: Path, tmp_path: Path) -> None:
    labels = _write_labels(tmp_path / "labels.csv", [], header="tile,TE,NEC")
    with pytest.raises(DatasetError, match=r"labels.csv: has no column path, LYM, TAS \(columns: tile, TE, NEC\)"):
        check_tiles(tiled, labels)


def test_folder_without_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"holds no manifest.csv .*output of histo-daen tile"):
        check_tiles(tmp_path, tmp_path / "labels.csv")


def test_tiles_have_no_val_or_test_split(tiled: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"a tiles dataset has no test split \(tiles have no masks\)"):
        check_tiles(tiled, tmp_path / "labels.csv", splits=("train", "test"))
