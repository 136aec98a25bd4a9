"""QuPath GeoJSON (formats.md §1.6): level-0 coordinates, holes, validity after rounding, classes, fragments, clipping
to the slide. Written files are checked by ``check_qupath_geojson`` (geojson-pydantic + QuPath's import rules)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from histo_daen.classes import LUAD
from histo_daen.export.geojson import (
    GeoJsonOptions,
    class_geometries,
    geojson_features,
    qupath_origin,
    slide_region,
    write_geojson,
)
from histo_daen.export.zarr_map import open_map_writer, read_tissue_map

EXACT = GeoJsonOptions(simplify_map_pixels=0.0, min_area_um2=0.0)


def _features(labels: np.ndarray, options: GeoJsonOptions = EXACT, **kwargs: object) -> list[dict]:
    geometries = class_geometries([(0, labels)])
    return geojson_features(geometries, classes=LUAD, mpp0=0.5, map_downsample=16.0, options=options, **kwargs)


def _valid_after_rounding(feature: dict) -> bool:
    """What QuPath 0.6+ does on import: snap to a 0.01 grid; the geometry must still be valid."""
    geometry = shape(feature["geometry"])
    return geometry.is_valid and shapely.set_precision(geometry, 0.01).is_valid


def test_a_square_lands_on_its_level0_pixel_corners() -> None:
    labels = np.zeros((10, 10), dtype=np.uint8)
    labels[2:5, 3:7] = 1  # rows 2-4, columns 3-6: TE
    (feature,) = _features(labels)
    ring = feature["geometry"]["coordinates"][0]
    assert feature["geometry"]["type"] == "Polygon"
    # Map pixel (r, c) covers level-0 [16c, 16c + 16) x [16r, 16r + 16).
    assert {tuple(point) for point in ring} == {(48.0, 32.0), (112.0, 32.0), (112.0, 80.0), (48.0, 80.0)}
    assert ring[0] == ring[-1] and len(ring) == 5
    assert feature["properties"]["measurements"]["area_um2"] == pytest.approx(12 * 64.0)  # 8 um map pixels


def test_holes_are_kept(quadrant_labels: np.ndarray) -> None:
    te = next(f for f in _features(quadrant_labels) if f["properties"]["classification"]["name"] == "TE")
    polygon = shape(te["geometry"])
    assert polygon.geom_type == "Polygon" and len(polygon.interiors) == 1
    assert shapely.Polygon(polygon.interiors[0]).area == pytest.approx((6 * 16) ** 2)


def test_bow_tie_and_self_touching_rings_export_as_valid_geometry() -> None:
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[1, 1] = labels[2, 2] = 2  # two pixels touching only at a corner: a bow tie
    # A ring of pixels that closes on itself through one diagonal contact: its hole touches the shell at a point.
    labels[4, 4:7] = labels[5, 4] = labels[5, 6] = labels[6, 5:7] = 3
    features = _features(labels)
    assert [f["properties"]["classification"]["name"] for f in features] == ["NEC", "LYM"]
    for feature in features:
        assert _valid_after_rounding(feature), feature["geometry"]
    assert shape(features[0]["geometry"]).area == pytest.approx(2 * 16**2)


def test_classification_comes_from_the_class_table(quadrant_labels: np.ndarray) -> None:
    features = _features(quadrant_labels)
    assert [f["properties"]["classification"] for f in features] == [
        {"name": cls.code, "color": list(cls.colour)} for cls in LUAD.classes
    ]
    for feature in features:
        assert feature["properties"]["objectType"] == "annotation" and feature["properties"]["isLocked"] is True
        assert "type" not in feature["properties"]  # QuPath would read it as an object type


def test_detections_are_one_object_per_region() -> None:
    labels = np.zeros((12, 12), dtype=np.uint8)
    labels[1:4, 1:4] = 4
    labels[7:11, 6:10] = 4
    options = GeoJsonOptions(object_type="detection", simplify_map_pixels=0.0, min_area_um2=0.0)
    features = _features(labels, options)
    assert len(features) == 2
    assert {f["properties"]["objectType"] for f in features} == {"detection"}
    assert sorted(f["properties"]["measurements"]["area_um2"] for f in features) == [9 * 64.0, 16 * 64.0]
    assert all(f["geometry"]["type"] == "Polygon" for f in features)


def test_small_fragments_and_holes_are_dropped_by_area() -> None:
    labels = np.zeros((20, 20), dtype=np.uint8)
    labels[2:12, 2:12] = 1  # 100 px = 6400 um²
    labels[6, 6] = 0  # a one-pixel hole (64 um²)
    labels[15, 15] = 1  # a one-pixel fragment (64 um²)
    options = GeoJsonOptions(simplify_map_pixels=0.0, min_area_um2=100.0)
    (feature,) = _features(labels, options)
    polygon = shape(feature["geometry"])
    assert polygon.geom_type == "Polygon" and len(polygon.interiors) == 0
    assert polygon.area == pytest.approx(100 * 16**2)


def test_simplification_cuts_vertices_but_stays_within_tolerance() -> None:
    yy, xx = np.mgrid[:200, :200]
    disc = (((yy - 100) ** 2 + (xx - 100) ** 2) < 80**2).astype(np.uint8)
    exact = shape(_features(disc)[0]["geometry"])
    options = GeoJsonOptions(simplify_map_pixels=1.0, min_area_um2=0.0)
    simplified = shape(_features(disc, options)[0]["geometry"])
    assert len(simplified.exterior.coords) < len(exact.exterior.coords) / 3
    assert simplified.hausdorff_distance(exact) <= 16.0 + 1e-6  # one map pixel in level-0 pixels


def test_ids_are_uuids_and_reproducible(quadrant_labels: np.ndarray) -> None:
    first = [f["id"] for f in _features(quadrant_labels, id_seed="slide-a")]
    again = [f["id"] for f in _features(quadrant_labels, id_seed="slide-a")]
    other = [f["id"] for f in _features(quadrant_labels, id_seed="slide-b")]
    assert first == again and not set(first) & set(other) and len(set(first)) == 4


def test_written_file_is_a_feature_collection_of_valid_features(
    make_map, quadrant_labels, tmp_path: Path, check_qupath_geojson
) -> None:
    tissue_map = make_map(quadrant_labels)
    path = write_geojson(tissue_map, tmp_path / "map.geojson")
    collection = check_qupath_geojson(path)
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 4
    te = collection["features"][0]["properties"]["measurements"]
    assert te["mean_probability"] == pytest.approx(0.8, abs=1e-3)  # the fixture's score for the labelled class
    assert collection["histo_daen"]["map_downsample"] == 16.0


def test_gzip_output_for_qupath_04(make_map, quadrant_labels, tmp_path: Path, check_qupath_geojson) -> None:
    tissue_map = make_map(quadrant_labels)
    path = write_geojson(tissue_map, tmp_path / "map.geojson.gz")
    collection = check_qupath_geojson(path)
    assert collection == json.loads(gzip.decompress(path.read_bytes()))
    assert len(collection["features"]) == 4
    assert write_geojson(tissue_map, tmp_path / "again.geojson.gz").read_bytes() == path.read_bytes()


def test_origin_offset_is_subtracted() -> None:
    labels = np.zeros((4, 4), dtype=np.uint8)
    labels[1, 1] = 1
    options = GeoJsonOptions(simplify_map_pixels=0.0, min_area_um2=0.0, origin_xy_level0=(10.0, 20.0))
    (feature,) = _features(labels, options)
    assert min(point[0] for point in feature["geometry"]["coordinates"][0]) == 6.0  # 16 - 10
    assert min(point[1] for point in feature["geometry"]["coordinates"][0]) == -4.0  # 16 - 20


def test_qupath_origin_comes_from_the_slide_bounds_the_map_records(tmp_path: Path, check_qupath_geojson) -> None:
    labels = np.zeros((16, 16), dtype=np.uint8)
    labels[4:8, 4:8] = 2
    writer = open_map_writer(
        tmp_path / "map.zarr",
        shape_hw=labels.shape,
        classes=LUAD,
        mpp0=0.5,
        map_downsample=16.0,
        chunk_size=16,
        provenance={"slide": {"name": "scan.mrxs", "dimensions": [400, 400], "bounds_level0": [10, 20, 200, 100]}},
    )
    writer.write_band(0, np.zeros((4, 16, 16)), labels)
    writer.finalise()
    tissue_map = read_tissue_map(tmp_path / "map.zarr")
    assert qupath_origin(tissue_map) == (10.0, 20.0)
    assert slide_region(tissue_map) == (10.0, 20.0, 210.0, 120.0)  # the bounds, not the whole of level 0
    options = GeoJsonOptions(simplify_map_pixels=0.0, min_area_um2=0.0, origin_xy_level0=qupath_origin(tissue_map))
    collection = check_qupath_geojson(
        write_geojson(tissue_map, tmp_path / "m.geojson", options=options), region=(0.0, 0.0, 200.0, 100.0)
    )
    ring = collection["features"][0]["geometry"]["coordinates"][0]
    # NEC covers level-0 [64, 128) x [64, 128); the bounds end at y = 120; QuPath's (0, 0) is the bounds corner.
    assert {tuple(point) for point in ring} == {(54.0, 44.0), (118.0, 44.0), (118.0, 100.0), (54.0, 100.0)}
    assert collection["histo_daen"]["origin_xy_level0"] == [10.0, 20.0]
    assert collection["histo_daen"]["slide_region_level0"] == [10.0, 20.0, 210.0, 120.0]


def test_maps_of_earlier_versions_keep_their_bounds_corner(tmp_path: Path) -> None:
    writer = open_map_writer(
        tmp_path / "map.zarr",
        shape_hw=(16, 16),
        classes=LUAD,
        mpp0=0.5,
        map_downsample=16.0,
        chunk_size=16,
        provenance={"slide": {"name": "scan.mrxs", "bounds_xy_level0": [100, 200]}},
    )
    writer.write_band(0, np.zeros((4, 16, 16)), np.zeros((16, 16), dtype=np.uint8))
    writer.finalise()
    tissue_map = read_tissue_map(tmp_path / "map.zarr")
    assert qupath_origin(tissue_map) == (100.0, 200.0) and slide_region(tissue_map) is None


@pytest.mark.parametrize("simplify", [0.0, 0.5, 2.0])
def test_geojson_never_leaves_a_slide_whose_size_is_no_multiple_of_the_map_pixel(
    make_map, tmp_path: Path, check_qupath_geojson, simplify: float
) -> None:
    # What a real 2220 x 2967 Aperio slide showed: ceil(2967 / 16.03) = 186 map rows reach y = 2981.6, past the edge.
    width, height = 1000, 750  # 62.5 x 46.9 map pixels of 16 level-0 pixels: the last row and column overshoot
    labels = np.ones((47, 63), dtype=np.uint8)  # tissue up to the map's last pixel, as on a section cut at the edge
    labels[:, 40:] = 3
    tissue_map = make_map(labels, slide={"name": "odd.svs", "dimensions": [width, height]})
    options = GeoJsonOptions(simplify_map_pixels=simplify, min_area_um2=0.0)
    collection = check_qupath_geojson(
        write_geojson(tissue_map, tmp_path / "map.geojson", options=options), region=(0.0, 0.0, width, height)
    )
    xs = [x for feature in collection["features"] for x, _ in feature["geometry"]["coordinates"][0]]
    ys = [y for feature in collection["features"] for _, y in feature["geometry"]["coordinates"][0]]
    assert max(xs) == width and max(ys) == height  # clipped exactly at the edge, not short of it
    area = sum(shape(feature["geometry"]).area for feature in collection["features"])
    assert area == pytest.approx(width * height)  # the map covers the slide, so the objects cover it exactly
    te = collection["features"][0]["properties"]["measurements"]["area_um2"]
    assert te == pytest.approx(640 * height * 0.25, rel=1e-3)  # measured on the slide, not on the overshoot


def test_a_map_without_slide_size_is_clipped_to_its_own_extent(make_map, tmp_path: Path, check_qupath_geojson) -> None:
    tissue_map = make_map(np.ones((8, 8), dtype=np.uint8), map_downsample=4.0)
    options = GeoJsonOptions(simplify_map_pixels=0.0, min_area_um2=0.0)
    check_qupath_geojson(write_geojson(tissue_map, tmp_path / "map.geojson", options=options), region=(0, 0, 32, 32))


def _collection(**changes: object) -> dict:
    """A QuPath-importable collection with one square annotation; ``changes`` replace properties entries."""
    properties = {
        "objectType": "annotation",
        "name": "TE",
        "classification": {"name": "TE", "color": [205, 51, 51]},
        "isLocked": True,
        "measurements": {"area_um2": 64.0},
    }
    properties.update(changes)
    ring = [[0.0, 0.0], [16.0, 0.0], [16.0, 16.0], [0.0, 16.0], [0.0, 0.0]]
    feature = {
        "type": "Feature",
        "id": "6f1c7f0e-3d3b-4c55-9a51-2f0d4a8b9e21",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {k: v for k, v in properties.items() if v is not None},
    }
    return {"type": "FeatureCollection", "features": [feature]}


@pytest.mark.parametrize(
    "changes",
    [
        {"classification": {"name": "TE"}},  # no colour: QuPath 0.4+ aborts the whole import
        {"classification": {"name": "a: b", "color": [1, 2, 3]}},  # ':' makes a derived class
        {"classification": {"name": "TE", "color": [300, 0, 0]}},
        {"classification": "TE"},  # a string works in 0.4+ but not 0.3, and has no colour
        {"objectType": "region"},
        {"type": "TE"},  # read as an object type
        {"measurements": {"area_um2": float("nan")}},
        {"measurements": [{"name": "area_um2", "value": 1.0}]},  # 0.3's array form
    ],
)
def test_the_qupath_checker_refuses_what_qupath_would_misread(changes: dict, check_qupath_geojson) -> None:
    check_qupath_geojson(_collection())  # the unchanged collection passes
    with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
        check_qupath_geojson(_collection(**changes))


def test_the_qupath_checker_refuses_geometry_off_the_slide_or_open_rings(check_qupath_geojson) -> None:
    with pytest.raises(AssertionError, match="outside the slide"):
        check_qupath_geojson(_collection(), region=(0.0, 0.0, 10.0, 10.0))
    open_ring = _collection()
    open_ring["features"][0]["geometry"]["coordinates"][0].pop()
    with pytest.raises(ValueError):
        check_qupath_geojson(open_ring)
