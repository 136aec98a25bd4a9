"""Fixtures for the export tests: small finished tissue maps written with the real writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from histo_daen.classes import LUAD
from histo_daen.export.zarr_map import NgffVersion, TissueMap, open_map_writer, read_tissue_map

MapFactory = Callable[..., TissueMap]


def blocky_labels(shape_hw: tuple[int, int]) -> np.ndarray:
    """(h, w) uint8 map values: glass border, four class quadrants, a glass hole in the TE quadrant."""
    height, width = shape_hw
    labels = np.zeros(shape_hw, dtype=np.uint8)
    inner = (slice(4, height - 4), slice(4, width - 4))
    quadrant = np.zeros(shape_hw, dtype=np.uint8)
    quadrant[: height // 2, : width // 2] = 1
    quadrant[: height // 2, width // 2 :] = 2
    quadrant[height // 2 :, : width // 2] = 3
    quadrant[height // 2 :, width // 2 :] = 4
    labels[inner] = quadrant[inner]
    labels[10:16, 10:16] = 0  # a hole in TE
    return labels


def scores_for(labels: np.ndarray, n_classes: int = 4) -> np.ndarray:
    """(K, h, w) float32 scores whose argmax + 1 is ``labels`` on tissue: 0.8 for the class, 0.1 elsewhere."""
    scores = np.full((n_classes, *labels.shape), 0.1, dtype=np.float32)
    for value in range(1, n_classes + 1):
        scores[value - 1][labels == value] = 0.8
    return scores


def write_map(
    path: Path,
    labels: np.ndarray,
    *,
    mpp0: float = 0.5,
    map_downsample: float = 16.0,
    chunk_size: int = 32,
    ngff_version: NgffVersion = "0.4",
    pyramid_levels: int | None = 3,
    slide: dict[str, object] | None = None,
) -> TissueMap:
    """Write ``labels`` (and matching scores) as a finished map through the band writer.

    ``slide`` replaces the recorded slide facts (e.g. ``dimensions``, ``bounds_level0``) that exports read.
    """
    scores = scores_for(labels)
    writer = open_map_writer(
        path,
        shape_hw=labels.shape,
        classes=LUAD,
        mpp0=mpp0,
        map_downsample=map_downsample,
        chunk_size=chunk_size,
        ngff_version=ngff_version,
        provenance={"slide": slide if slide is not None else {"name": "synthetic.svs", "header_sha256": "abc"}},
    )
    for index in range(writer.n_bands):
        y0, y1 = writer.band_rows(index)
        writer.write_band(index, scores[:, y0:y1], labels[y0:y1])
    writer.finalise(pyramid_levels=pyramid_levels)
    return read_tissue_map(path)


@pytest.fixture
def make_map(tmp_path: Path, check_ome_zarr: Callable[[Path], None]) -> MapFactory:
    """``make_map(labels, **options)`` writes a finished map under tmp_path, validates it (NGFF), and opens it."""
    counter = iter(range(1000))

    def factory(labels: np.ndarray, **options: object) -> TissueMap:
        tissue_map = write_map(tmp_path / f"map{next(counter)}.zarr", labels, **options)  # type: ignore[arg-type]
        check_ome_zarr(tissue_map.path)
        return tissue_map

    return factory


@pytest.fixture
def quadrant_labels() -> np.ndarray:
    """(64, 80) uint8: glass border 4 px wide, TE/NEC/LYM/TAS quadrants, a 6x6 glass hole in TE at (10, 10)."""
    return blocky_labels((64, 80))
