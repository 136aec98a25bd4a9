"""The OME-Zarr tissue map: band writing, resume, pyramid, NGFF metadata read back by ome-zarr and as napari's
reader plugin lays it out, areas. Every map ``make_map`` writes is validated against the NGFF spec (ome-zarr-models)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

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


def _napari_layers(path: Path) -> list[tuple[list, dict, str]]:
    """The layers napari-ome-zarr's reader hands napari: ``(data levels, layer kwargs, "image" | "labels")``.

    napari-ome-zarr needs napari itself (about 100 packages: Qt shims, vispy, IPython), so the tests follow the
    plugin's reading steps headless: ome-zarr's ``Reader`` over the store (what the plugin called up to 0.7), nodes
    without data skipped, ``scale`` and ``translate`` from level 0's coordinate transformations without the channel
    axis, the channel axis as ``channel_axis`` of an image layer, and a label node as a ``labels`` layer with its
    colours and properties.
    """
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    layers = []
    for node in Reader(parse_url(str(path)))():
        if not node.data:  # the labels group itself: no layer
            continue
        axis_types = [axis["type"] for axis in node.metadata["axes"]]
        channel_axis = axis_types.index("channel") if "channel" in axis_types else None
        kwargs: dict = {}
        for transform in node.metadata["coordinateTransformations"][0]:
            key, values = (
                ("scale", transform["scale"]) if "scale" in transform else ("translate", transform["translation"])
            )
            kwargs[key] = tuple(v for index, v in enumerate(values) if index != channel_axis)
        if node.load(Label):
            kwargs |= {"colormap": node.metadata["color"], "properties": node.metadata["properties"]}
            layers.append((list(node.data), kwargs, "labels"))
        else:
            layers.append((list(node.data), {**kwargs, "channel_axis": channel_axis}, "image"))
    return layers


@pytest.mark.parametrize("ngff_version", ["0.4", "0.5"])
def test_a_viewer_lays_map_pixels_over_the_slide_pixels_they_cover(
    make_map, ngff_version: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="ome_zarr")
    labels = np.zeros((20, 30), dtype=np.uint8)
    labels[5:15, 5:25] = 3
    mpp0, downsample = 0.25, 12.0  # a 40x scan mapped at 3 um per map pixel
    tissue_map = make_map(labels, mpp0=mpp0, map_downsample=downsample, ngff_version=ngff_version)
    (image, image_kwargs, image_kind), (label, label_kwargs, label_kind) = _napari_layers(tissue_map.path)
    assert (image_kind, label_kind) == ("image", "labels")
    assert image_kwargs["channel_axis"] == 0
    assert [level.shape for level in image] == [(4, 20, 30), (4, 10, 15), (4, 5, 8)]
    assert np.array_equal(np.asarray(label[0]), labels)
    # Both layers share one world frame (micrometres), so the labels sit on the probabilities.
    assert label_kwargs["scale"] == image_kwargs["scale"] == (3.0, 3.0)
    assert label_kwargs["translate"] == image_kwargs["translate"]
    # A slide opened beside it at (mpp0, mpp0) has level-0 pixel (r, c) at world (r, c) * mpp0; map pixel (i, j)
    # lands on the centre of the level-0 block it was computed from: level-0 [12 i, 12 i + 12).
    ty, tx = label_kwargs["translate"]
    for i in (0, 7, 19):
        world = ty + i * label_kwargs["scale"][0]
        assert world / mpp0 == pytest.approx(downsample * i + (downsample - 1) / 2)
    assert tx == ty
    assert label_kwargs["colormap"][3] == pytest.approx([65 / 255, 105 / 255, 225 / 255, 1.0])  # LYM's colour
    assert label_kwargs["properties"][3]["class"] == "LYM"


@pytest.mark.parametrize("ngff_version", ["0.4", "0.5"])
def test_lower_levels_stay_centred_on_the_pixels_they_average(make_map, ngff_version: str) -> None:
    from ome_zarr_models import open_ome_zarr

    tissue_map = make_map(np.ones((40, 40), dtype=np.uint8), ngff_version=ngff_version, pyramid_levels=3)
    image = open_ome_zarr(zarr.open_group(tissue_map.path, mode="r"))
    attributes = image.attributes if ngff_version == "0.4" else image.attributes.ome  # type: ignore[attr-defined]
    datasets = attributes.multiscales[0].datasets
    scale0, translation0 = (
        t.scale if t.type == "scale" else t.translation for t in datasets[0].coordinateTransformations
    )
    for level, dataset in enumerate(datasets):
        scale, translation = (
            t.scale if t.type == "scale" else t.translation for t in dataset.coordinateTransformations
        )
        assert scale[1:] == [scale0[1] * 2**level] * 2
        # Level k's pixel 0 averages level-0 pixels 0 .. 2^k - 1: its centre is their middle.
        assert translation[1:] == pytest.approx([translation0[1] + scale0[1] * (2**level - 1) / 2] * 2)


@pytest.mark.parametrize(
    "damage",
    ["axis order", "scale length", "label level missing"],
)
def test_the_ngff_checker_refuses_a_damaged_map(make_map, quadrant_labels, damage: str, check_ome_zarr) -> None:
    tissue_map = make_map(quadrant_labels)  # validated as written
    root = zarr.open_group(tissue_map.path, mode="r+")
    if damage == "label level missing":
        shutil.rmtree(tissue_map.path / "labels" / "tissue_classes" / "s2")
    else:
        multiscales = root.attrs["multiscales"]
        if damage == "axis order":
            axes = multiscales[0]["axes"]
            multiscales[0]["axes"] = [*axes[1:], axes[0]]  # the spec orders channel before space
        else:
            multiscales[0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [8.0, 8.0]  # 2 values, 3 axes
        root.attrs["multiscales"] = multiscales
    with pytest.raises((ValueError, KeyError, FileNotFoundError)):
        check_ome_zarr(tissue_map.path)


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
    with pytest.raises(OutputExistsError, match=r"map\.zarr: .*mpp0: stored 0\.5, requested 0\.25.*--overwrite"):
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
