"""``histo-daen export geojson``: redo the GeoJSON of a finished map without the model."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from histo_daen.cli import cli

from histo_daen.classes import LUAD
from histo_daen.export.zarr_map import open_map_writer


@pytest.fixture
def map_path(tmp_path: Path) -> Path:
    """A finished 48 x 64 map: TE left half, LYM right half, glass border; 8 um pixels (mpp0 0.5, downsample 16)."""
    labels = np.zeros((48, 64), dtype=np.uint8)
    labels[4:44, 4:32] = 1
    labels[4:44, 32:60] = 3
    scores = np.stack([(labels == value).astype(np.float32) for value in range(1, 5)])
    path = tmp_path / "slide" / "map.zarr"
    writer = open_map_writer(path, shape_hw=labels.shape, classes=LUAD, mpp0=0.5, map_downsample=16.0, chunk_size=32)
    for index in range(writer.n_bands):
        y0, y1 = writer.band_rows(index)
        writer.write_band(index, scores[:, y0:y1], labels[y0:y1])
    writer.finalise()
    return path


def test_export_geojson_writes_beside_the_map(map_path: Path, check_qupath_geojson) -> None:
    result = CliRunner().invoke(cli, ["export", "geojson", str(map_path)])
    assert result.exit_code == 0, result.output
    target = map_path.with_name("map.geojson")
    assert f"written to {target}" in result.output
    collection = check_qupath_geojson(target, region=(0, 0, 1024, 768))
    assert [f["properties"]["classification"]["name"] for f in collection["features"]] == ["TE", "LYM"]
    # TE covers map columns 4-31, rows 4-43: level-0 x from 64 to 512, y from 64 to 704.
    xs = [x for x, _ in collection["features"][0]["geometry"]["coordinates"][0]]
    ys = [y for _, y in collection["features"][0]["geometry"]["coordinates"][0]]
    assert (min(xs), max(xs), min(ys), max(ys)) == (64.0, 512.0, 64.0, 704.0)


def test_export_geojson_detections_gzipped(map_path: Path, tmp_path: Path, check_qupath_geojson) -> None:
    target = tmp_path / "objects.geojson.gz"
    result = CliRunner().invoke(
        cli, ["export", "geojson", str(map_path), "-o", str(target), "--object-type", "detection", "--min-area", "0"]
    )
    assert result.exit_code == 0, result.output
    collection = check_qupath_geojson(target, region=(0, 0, 1024, 768))
    assert collection == json.loads(gzip.decompress(target.read_bytes()))
    assert {f["properties"]["objectType"] for f in collection["features"]} == {"detection"}


def test_existing_geojson_needs_overwrite(map_path: Path) -> None:
    target = map_path.with_name("map.geojson")
    target.write_text("keep me")
    result = CliRunner().invoke(cli, ["export", "geojson", str(map_path)])
    assert result.exit_code == 1
    assert "Error:" in result.output and "--overwrite" in result.output and "Traceback" not in result.output
    assert target.read_text() == "keep me"
    again = CliRunner().invoke(cli, ["export", "geojson", str(map_path), "--overwrite"])
    assert again.exit_code == 0 and json.loads(target.read_text())["type"] == "FeatureCollection"


def test_a_folder_that_is_not_a_map_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "other.zarr"
    folder.mkdir()
    result = CliRunner().invoke(cli, ["export", "geojson", str(folder)])
    assert result.exit_code == 1
    assert "Error:" in result.output and "not a histo-daen tissue map" in result.output
