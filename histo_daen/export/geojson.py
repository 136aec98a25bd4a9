"""Tissue label maps as QuPath GeoJSON: one locked annotation per class (or one detection per region).

What is written follows ``formats.md`` §1.6: a ``FeatureCollection``; each feature has a reproducible UUID ``id``,
``properties.objectType``, ``properties.classification = {"name", "color"}`` from the one class table, finite
``measurements``; coordinates are level-0 slide pixels ``[x, y]`` rounded to 0.01 (QuPath's precision grid), and
every geometry is valid after that rounding (QuPath 0.6+ refuses a whole file over one invalid polygon), and
every coordinate lies on the slide.

Vectorising: each class's pixels are covered by rectangles (runs of equal value in a row, merged down the rows
while they keep the same extent) and unioned with GEOS, which traces pixel edges exactly, keeps holes, and gives
valid (Multi)Polygons even where pixels touch only at a corner. The union is then scaled to level-0 pixels,
simplified to a tolerance (half a map pixel by default), snapped to the 0.01 grid, repaired if the snapping broke
anything, and rid of parts and holes smaller than an area threshold.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import shapely
import shapely.affinity
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from histo_daen.atomic import atomic_write
from histo_daen.classes import ClassSet
from histo_daen.config.schema import SegmentConfig
from histo_daen.export.zarr_map import TissueMap, reading_map

__all__ = [
    "GeoJsonOptions",
    "ObjectType",
    "class_geometries",
    "geojson_features",
    "geojson_options",
    "qupath_origin",
    "slide_region",
    "write_geojson",
]

logger = logging.getLogger(__name__)

ObjectType = Literal["annotation", "detection"]
Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in level-0 pixels, ends exclusive

PRECISION = 0.01  # QuPath snaps imported coordinates to a 0.01-pixel grid (0.6+); we write what it will keep
# A fixed namespace makes feature ids reproducible: the same map gives the same ids (uuid5, RFC 4122).
_ID_NAMESPACE = uuid.UUID("5f0b8a3c-2a71-4c57-8f61-6d1e1c4e9b20")


@dataclass(frozen=True)
class GeoJsonOptions:
    """How a label map becomes QuPath objects.

    Attributes:
        object_type: "annotation" (one locked, editable MultiPolygon per class; what a pathologist reviews) or
            "detection" (one object per connected region; QuPath handles hundreds of thousands of them).
        simplify_map_pixels: simplification tolerance in map pixels (0 keeps every pixel corner).
        min_area_um2: parts and holes smaller than this many square micrometres are dropped (filled, for holes).
        origin_xy_level0: subtracted from every coordinate, e.g. OpenSlide's bounds-x/-y for slides QuPath crops.
    """

    object_type: ObjectType = "annotation"
    simplify_map_pixels: float = 0.5
    min_area_um2: float = 500.0
    origin_xy_level0: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.object_type not in ("annotation", "detection"):
            raise ValueError(f"object_type must be 'annotation' or 'detection', got {self.object_type!r}")
        if self.simplify_map_pixels < 0:
            raise ValueError(f"simplify_map_pixels must be >= 0, got {self.simplify_map_pixels}")
        if self.min_area_um2 < 0:
            raise ValueError(f"min_area_um2 must be >= 0, got {self.min_area_um2}")


def _value_rectangles(labels: np.ndarray, row_offset: int) -> dict[int, list[tuple[int, int, int, int]]]:
    """Cover each non-zero value's pixels with rectangles ``(x0, y0, x1, y1)`` in map pixels (ends exclusive).

    Runs of one value in a row are merged with the runs right below them while start and end stay the same, so a
    smooth map of N rows gives far fewer than N rectangles per region.
    """
    height, width = labels.shape
    rectangles: dict[int, list[tuple[int, int, int, int]]] = {}
    open_runs: dict[tuple[int, int, int], int] = {}  # (value, x0, x1) -> first row
    for row_index in range(height + 1):
        current: set[tuple[int, int, int]] = set()
        if row_index < height:
            row = labels[row_index]
            edges = np.flatnonzero(row[1:] != row[:-1]) + 1
            starts = np.concatenate(([0], edges))
            ends = np.concatenate((edges, [width]))
            for start, end, value in zip(starts.tolist(), ends.tolist(), row[starts].tolist(), strict=True):
                if value:
                    current.add((value, start, end))
        for key in [key for key in open_runs if key not in current]:
            value, x0, x1 = key
            first_row = open_runs.pop(key)
            rectangles.setdefault(value, []).append((x0, first_row + row_offset, x1, row_index + row_offset))
        for key in current:
            open_runs.setdefault(key, row_index)
    return rectangles


def class_geometries(bands: Iterable[tuple[int, np.ndarray]]) -> dict[int, BaseGeometry]:
    """Trace the pixel edges of every non-zero value of a label map given band by band.

    Args:
        bands: ``(y0, (h, W) uint8 labels)`` pieces of one map, top to bottom (one piece for a whole array).

    Returns:
        ``{map value: (Multi)Polygon}`` in map-pixel coordinates (x right, y down, pixel (r, c) is the square
        ``[c, c + 1] x [r, r + 1]``); valid, with holes; values absent from the map are absent here.
    """
    per_band: dict[int, list[BaseGeometry]] = {}
    for y0, band in bands:
        for value, rects in _value_rectangles(np.asarray(band), y0).items():
            coords = np.asarray(rects, dtype=np.float64)
            boxes = shapely.box(coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3])
            per_band.setdefault(value, []).append(shapely.union_all(boxes))
    return {value: shapely.union_all(pieces) for value, pieces in sorted(per_band.items())}


def _polygons(geometry: BaseGeometry) -> list[Polygon]:
    """The polygonal parts of a geometry (points and lines that a repair may leave behind are dropped)."""
    if isinstance(geometry, Polygon):
        return [] if geometry.is_empty else [geometry]
    if hasattr(geometry, "geoms"):
        return [part for sub in geometry.geoms for part in _polygons(sub)]
    return []


def _clean(geometry: BaseGeometry, *, min_area: float) -> list[Polygon]:
    """Snap to QuPath's 0.01 grid, repair what snapping broke, drop parts and fill holes below ``min_area``."""
    snapped = shapely.set_precision(geometry, PRECISION)
    if not snapped.is_valid:
        snapped = shapely.make_valid(snapped)
    kept = []
    for part in _polygons(snapped):
        if part.area < min_area:
            continue
        holes = [ring for ring in part.interiors if Polygon(ring).area >= min_area]
        if len(holes) != len(part.interiors):
            part = Polygon(part.exterior, holes)
        kept.append(part)
    return kept


def _ring(ring: Any, origin_xy: tuple[float, float]) -> list[list[float]]:
    # round() gives the shortest decimal (12.34, not 12.340000000000002) on the grid set_precision snapped to.
    return [[round(x - origin_xy[0], 2), round(y - origin_xy[1], 2)] for x, y in ring.coords]


def _polygon_coordinates(polygon: Polygon, origin_xy: tuple[float, float]) -> list[list[list[float]]]:
    return [_ring(polygon.exterior, origin_xy)] + [_ring(hole, origin_xy) for hole in polygon.interiors]


def _geometry_json(parts: list[Polygon], origin_xy: tuple[float, float]) -> dict[str, Any]:
    if len(parts) == 1:
        return {"type": "Polygon", "coordinates": _polygon_coordinates(parts[0], origin_xy)}
    return {"type": "MultiPolygon", "coordinates": [_polygon_coordinates(part, origin_xy) for part in parts]}


def geojson_features(
    geometries: Mapping[int, BaseGeometry],
    *,
    classes: ClassSet,
    mpp0: float,
    map_downsample: float,
    options: GeoJsonOptions = GeoJsonOptions(),
    id_seed: str = "",
    measurements: Mapping[int, Mapping[str, float]] | None = None,
    region_level0: Box | None = None,
) -> list[dict[str, Any]]:
    """QuPath features from map-pixel class geometries.

    Args:
        geometries: ``{map value: geometry}`` in map pixels, from :func:`class_geometries`.
        classes: the class set; map value ``v`` is class index ``v - 1``.
        mpp0: microns per pixel of the slide's level 0 (for areas).
        map_downsample: level-0 pixels per map pixel.
        options: object type, simplification, area threshold, origin.
        id_seed: mixed into the uuid5 ids (e.g. the slide's content hash), so ids are unique across slides and
            equal between runs.
        measurements: extra finite numbers per map value (e.g. ``{"mean_probability": 0.8}``) for class features.
        region_level0: ``(x0, y0, x1, y1)`` level-0 rectangle the geometry is clipped to (the slide, see
            :func:`slide_region`); None keeps the map's whole extent.

    Returns:
        GeoJSON Feature dicts (level-0 pixel coordinates, 0.01 precision, valid geometry), class order.
    """
    min_area = options.min_area_um2 / mpp0**2  # level-0 pixels²
    tolerance = options.simplify_map_pixels * map_downsample
    features: list[dict[str, Any]] = []
    for cls in classes.classes:
        geometry = geometries.get(cls.map_value)
        if geometry is None or geometry.is_empty:
            continue
        level0 = shapely.affinity.scale(geometry, xfact=map_downsample, yfact=map_downsample, origin=(0, 0))
        if region_level0 is not None:
            # Before simplifying: simplification only drops vertices, so the result stays inside the (convex) box.
            level0 = shapely.intersection(level0, shapely.box(*region_level0))
        if tolerance > 0:
            level0 = shapely.simplify(level0, tolerance, preserve_topology=True)
        parts = _clean(level0, min_area=min_area)
        if not parts:
            continue
        classification = {"name": cls.code, "color": list(cls.colour)}
        groups = [parts] if options.object_type == "annotation" else [[part] for part in parts]
        for number, group in enumerate(groups):
            area_um2 = sum(part.area for part in group) * mpp0**2
            properties: dict[str, Any] = {
                "objectType": options.object_type,
                "name": cls.code if options.object_type == "annotation" else f"{cls.code} {number + 1}",
                "classification": classification,
                "measurements": {"area_um2": round(area_um2, 3)},
            }
            if options.object_type == "annotation":
                properties["isLocked"] = True
                for key, value in (measurements or {}).get(cls.map_value, {}).items():
                    properties["measurements"][key] = round(float(value), 6)
            features.append(
                {
                    "type": "Feature",
                    "id": str(uuid.uuid5(_ID_NAMESPACE, f"{id_seed}/{cls.code}/{options.object_type}/{number}")),
                    "geometry": _geometry_json(group, options.origin_xy_level0),
                    "properties": properties,
                }
            )
    return features


def slide_region(tissue_map: TissueMap) -> Box | None:
    """The level-0 rectangle ``(x0, y0, x1, y1)`` of the slide a map was made of: its bounds rectangle when the slide
    reports one (``openslide.bounds-*``, e.g. MRXS), else its whole level 0; None when the map records neither."""
    slide = tissue_map.provenance.get("slide", {})
    bounds = slide.get("bounds_level0")
    if bounds is not None:
        x, y, width, height = (float(value) for value in bounds)
        return x, y, x + width, y + height
    dimensions = slide.get("dimensions")
    if dimensions is not None:
        return 0.0, 0.0, float(dimensions[0]), float(dimensions[1])
    return None


def qupath_origin(tissue_map: TissueMap) -> tuple[float, float]:
    """Where QuPath puts its (0, 0) on the slide, in level-0 pixels: the slide's recorded bounds corner, or (0, 0).

    QuPath crops slides that report ``openslide.bounds-x/-y`` (MRXS and others) to those bounds, so coordinates
    meant for it are shifted by that corner (formats.md §1.4); the map records it from the slide it was made of.
    """
    slide = tissue_map.provenance.get("slide", {})
    # bounds_xy_level0: the corner alone, as maps of histo-daen before the bounds rectangle recorded it.
    corner = slide.get("bounds_level0", slide.get("bounds_xy_level0", (0, 0)))
    return float(corner[0]), float(corner[1])


def _mean_class_scores(tissue_map: TissueMap) -> dict[int, dict[str, float]]:
    """Mean score of each class over the pixels labelled with it, read band by band."""
    n_classes = len(tissue_map.classes)
    sums, counts = np.zeros(n_classes), np.zeros(n_classes, dtype=np.int64)
    scores = tissue_map.scores(0)
    for y0, band in tissue_map.label_bands():
        with reading_map(tissue_map.path):
            band_scores = np.asarray(scores[:, y0 : y0 + band.shape[0], :], dtype=np.float32)
        for index in range(n_classes):
            where = band == index + 1
            sums[index] += float(band_scores[index][where].sum())
            counts[index] += int(where.sum())
    return {index + 1: {"mean_probability": sums[index] / counts[index]} for index in range(n_classes) if counts[index]}


def geojson_options(config: SegmentConfig, tissue_map: TissueMap) -> GeoJsonOptions:
    """The GeoJSON options a segment config asks for, for one map (``segment`` and ``export geojson`` alike)."""
    return GeoJsonOptions(
        object_type=config.geojson_object_type,
        simplify_map_pixels=config.geojson_simplify,
        min_area_um2=config.geojson_min_area_um2,
        origin_xy_level0=qupath_origin(tissue_map) if config.geojson_bounds_offset else (0.0, 0.0),
    )


def write_geojson(
    tissue_map: TissueMap,
    path: str | os.PathLike[str],
    *,
    options: GeoJsonOptions = GeoJsonOptions(),
) -> Path:
    """Vectorise a tissue map's level s0 into a QuPath-importable GeoJSON file, atomically.

    Geometry is clipped to the slide the map records (:func:`slide_region`); a map that records no slide size (made
    by hand with :func:`~histo_daen.export.zarr_map.open_map_writer`) is clipped to its own extent.

    Args:
        tissue_map: a finished map (``read_tissue_map``).
        path: ``.geojson`` (or ``.json``); a ``.gz`` suffix writes gzip, which QuPath 0.4+ imports directly.
        options: object type, simplification, area threshold, origin.

    Returns:
        The path written.
    """
    target = Path(path)
    geometries = class_geometries(tissue_map.label_bands())
    slide = tissue_map.provenance.get("slide", {})
    region = slide_region(tissue_map)
    if region is None:
        height, width = tissue_map.shape_hw
        region = (0.0, 0.0, width * tissue_map.map_downsample, height * tissue_map.map_downsample)
    features = geojson_features(
        geometries,
        classes=tissue_map.classes,
        mpp0=tissue_map.mpp0,
        map_downsample=tissue_map.map_downsample,
        options=options,
        id_seed=str(slide.get("content_hash", slide.get("name", ""))),
        measurements=_mean_class_scores(tissue_map),
        region_level0=region,
    )
    collection = {
        "type": "FeatureCollection",
        "features": features,
        # A foreign member (RFC 7946 §6.1): how to place the coordinates, for readers other than QuPath.
        "histo_daen": {
            "coordinates": "level-0 pixels [x, y], origin top-left, minus origin_xy_level0",
            "origin_xy_level0": list(options.origin_xy_level0),
            "slide_region_level0": list(region),
            "mpp0": tissue_map.mpp0,
            "map_downsample": tissue_map.map_downsample,
            "map": tissue_map.path.name,
            "slide": slide.get("name"),
        },
    }
    text = json.dumps(collection, allow_nan=False, separators=(",", ":"))
    data = text.encode("utf-8")
    if target.suffix == ".gz":
        data = gzip.compress(data, mtime=0)  # mtime=0: the same map gives the same bytes
    with atomic_write(target) as tmp:
        tmp.write_bytes(data)
    logger.info("wrote %d features to %s", len(features), target)
    return target
