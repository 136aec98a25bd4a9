"""The OME-Zarr tissue map: band writing, resume, pyramid, NGFF metadata read back by ome-zarr, areas."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from histo_daen.classes import LUAD
from histo_daen.errors import OutputExistsError, PathError
from histo_daen.export.zarr_map import (
    auto_pyramid_levels,
    class_areas,
    downsample_labels,
    downsample_scores,
    open_map_writer,
    read_tissue_map,
)


def _writer(path: Path, **changes: object):
    options: dict[str, object] = {
        "shape_hw": (64, 80),
        "classes": LUAD,
        "mpp0": 0.5,
        "map_downsample": 16.0,
        "chunk_size": 32,
        "provenance": {"model": "daen"},
    }
    options.update(changes)
    return open_map_writer(path, **options)  # type: ignore[arg-type]


def test_map_reads_back_the_labels_and_scores_written(make_map, quadrant_labels: np.ndarray) -> None:
    tissue_map = make_map(quadrant_labels)
    assert tissue_map.shape_hw == (64, 80) and tissue_map.n_levels == 3
    assert np.array_equal(tissue_map.labels(0)[:], quadrant_labels)
    scores = tissue_map.scores(0)
    assert scores.dtype == np.float16 and scores.shape == (4, 64, 80)
    assert scores[1, 40, 60] == np.float16(0.1) and scores[3, 40, 60] == np.float16(0.8)
    assert tissue_map.labels(2).shape == (16, 20)
    assert tissue_map.map_mpp == pytest.approx(8.0)


@pytest.mark.parametrize("ngff_version", ["0.4", "0.5"])
def test_ome_zarr_reader_sees_scale_and_label_metadata(
    make_map, quadrant_labels: np.ndarray, ngff_version: str, caplog: pytest.LogCaptureFixture
) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    caplog.set_level(logging.ERROR, logger="ome_zarr")  # a 0.4 store read without fmt logs a harmless mismatch
    tissue_map = make_map(quadrant_labels, ngff_version=ngff_version)
    nodes = list(Reader(parse_url(str(tissue_map.path)))())
    image = nodes[0]
    assert any(isinstance(spec, Multiscales) for spec in image.specs)
    assert [tuple(level.shape) for level in image.data] == [(4, 64, 80), (4, 32, 40), (4, 16, 20)]
    transforms = image.metadata["coordinateTransformations"]
    # mpp0 0.5 um/px x map downsample 16 = 8 um per s0 pixel; centres offset by (16 - 1) / 2 level-0 pixels.
    assert transforms[0] == [
        {"type": "scale", "scale": [1.0, 8.0, 8.0]},
        {"type": "translation", "translation": [0.0, 3.75, 3.75]},
    ]
    assert transforms[2][0]["scale"] == [1.0, 32.0, 32.0]
    assert [axis["unit"] for axis in image.metadata["axes"][1:]] == ["micrometer", "micrometer"]
    label = next(node for node in nodes if any(isinstance(spec, Label) for spec in node.specs))
    assert np.array_equal(np.asarray(label.data[0]), quadrant_labels)
    assert label.metadata["color"][0] == [0.0, 0.0, 0.0, 0.0]  # no tissue is transparent
    assert label.metadata["color"][1] == pytest.approx([205 / 255, 51 / 255, 51 / 255, 1.0])
    assert label.metadata["properties"][3] == {"class": "LYM", "name": "lymphocytes"}


def test_ngff_04_layout_on_disk(make_map, quadrant_labels: np.ndarray) -> None:
    tissue_map = make_map(quadrant_labels)
    root = json.loads((tissue_map.path / ".zattrs").read_text())
    assert root["multiscales"][0]["version"] == "0.4"
    assert root["histo_daen"]["complete"] is True and root["histo_daen"]["classes"] == ["TE", "NEC", "LYM", "TAS"]
    assert json.loads((tissue_map.path / "labels" / ".zattrs").read_text()) == {"labels": ["tissue_classes"]}
    array = json.loads((tissue_map.path / "labels" / "tissue_classes" / "s0" / ".zarray").read_text())
    assert array["dtype"] == "|u1" and array["dimension_separator"] == "/" and array["chunks"] == [32, 32]


def test_ngff_05_nests_metadata_under_ome(make_map, quadrant_labels: np.ndarray) -> None:
    tissue_map = make_map(quadrant_labels, ngff_version="0.5")
    root = json.loads((tissue_map.path / "zarr.json").read_text())
    assert root["attributes"]["ome"]["version"] == "0.5"
    assert "version" not in root["attributes"]["ome"]["multiscales"][0]
    array = json.loads((tissue_map.path / "s0" / "zarr.json").read_text())
    assert array["dimension_names"] == ["c", "y", "x"]


def test_bands_are_recorded_and_a_reopened_writer_resumes(tmp_path: Path) -> None:
    path = tmp_path / "map.zarr"
    writer = _writer(path)
    assert writer.n_bands == 2 and writer.bands_done == 0
    writer.write_band(0, np.zeros((4, 32, 80)), np.ones((32, 80), dtype=np.uint8))
    reopened = _writer(path)
    assert reopened.bands_done == 1
    assert np.all(reopened._labels[:32] == 1)  # the band written before is kept


def test_reopening_with_other_settings_names_what_changed(tmp_path: Path) -> None:
    path = tmp_path / "map.zarr"
    _writer(path)
    with pytest.raises(OutputExistsError, match=r"map\.zarr: .*mpp0: 0\.5 -> 0\.25.*--overwrite"):
        _writer(path, mpp0=0.25)


def test_a_folder_that_is_not_a_map_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "map.zarr"
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not a histo-daen tissue map"):
        _writer(path)
    assert (path / "notes.txt").read_text() == "mine"


def test_bands_must_come_in_order(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "map.zarr")
    with pytest.raises(ValueError, match="band 1 written out of order"):
        writer.write_band(1, np.zeros((4, 32, 80)), np.zeros((32, 80), dtype=np.uint8))


def test_unfinished_map_is_refused_by_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "map.zarr"
    _writer(path).write_band(0, np.zeros((4, 32, 80)), np.zeros((32, 80), dtype=np.uint8))
    with pytest.raises(PathError, match=r"unfinished map \(1 bands written\).*same options"):
        read_tissue_map(path)


def test_missing_map_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PathError, match=r"nothing\.zarr: does not exist"):
        read_tissue_map(tmp_path / "nothing.zarr")


def test_downsample_labels_takes_the_mode_and_tissue_wins_ties() -> None:
    labels = np.array(
        [
            [1, 1, 2, 0, 3],
            [1, 2, 0, 2, 3],
        ],
        dtype=np.uint8,
    )
    assert downsample_labels(labels, 5).tolist() == [[1, 2, 3]]


def test_downsample_scores_averages_blocks_and_odd_edges() -> None:
    scores = np.arange(15, dtype=np.float32).reshape(1, 3, 5)
    halved = downsample_scores(scores)
    assert halved.shape == (1, 2, 3)
    assert halved[0, 0, 0] == pytest.approx((0 + 1 + 5 + 6) / 4)
    assert halved[0, 1, 2] == pytest.approx(14.0)  # the corner pixel averages with its own copies


def test_auto_pyramid_halves_until_1024() -> None:
    assert auto_pyramid_levels((1000, 900)) == 1
    assert auto_pyramid_levels((3000, 12500)) == 5  # 12500 -> 6250 -> 3125 -> 1563 -> 782


def test_class_areas_in_square_millimetres_and_percent(make_map) -> None:
    labels = np.zeros((40, 50), dtype=np.uint8)
    labels[:10, :10] = 1  # 100 px TE
    labels[20:40, :15] = 3  # 300 px LYM
    areas = {area.code: area for area in class_areas(make_map(labels, map_downsample=16.0))}
    # A map pixel is 8 um wide: 64 um² = 6.4e-5 mm².
    assert areas["TE"].n_pixels == 100 and areas["TE"].area_mm2 == pytest.approx(100 * 6.4e-5)
    assert areas["LYM"].percent_of_tissue == pytest.approx(75.0)
    assert areas["NEC"].area_mm2 == 0.0 and areas["NEC"].percent_of_tissue == 0.0
