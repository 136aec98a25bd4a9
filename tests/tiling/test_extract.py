"""Parallel tile reading: results in order, equal to in-process reads; deterministic encoding; atomic tile files."""

from __future__ import annotations

import hashlib
import io
from functools import partial
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from histo_daen.data.synthetic_slide import SyntheticSlide
from histo_daen.slide import open_slide
from histo_daen.tiling import TileWriter, encode_tile, iter_tile_pixels, map_tiles, read_tile, tile_grid, write_tile
from histo_daen.tiling.extract import worker_preload

# Worker functions must be importable by the workers: getattr(slide, name) is a builtin that fits func(slide, item).
NAMES = ["dimensions", "level_count", "backend", "mpp", "level_dimensions", "vendor"] * 4


def test_map_tiles_keeps_the_order_of_the_items(small_slide: SyntheticSlide) -> None:
    with open_slide(small_slide.path) as slide:
        expected = [getattr(slide, name) for name in NAMES]
        source = slide.source()
    assert list(map_tiles(source, NAMES, getattr, workers=2, chunk_size=3, max_pending=2)) == expected


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_worker_processes_read_the_same_pixels_as_this_process(small_slide: SyntheticSlide, backend: str) -> None:
    with open_slide(small_slide.path, backend=backend) as slide:
        grid = tile_grid(slide, target_mpp=1.0, tile_size=64, min_tissue=0.5)
        here = [read_tile(slide, tile, 64) for tile in grid.tiles]
        source = slide.source()
    there = list(iter_tile_pixels(source, grid.tiles, 64, workers=2, chunk_size=4))
    assert [tile for tile, _ in there] == list(grid.tiles)
    np.testing.assert_array_equal(np.stack([pixels for _, pixels in there]), np.stack(here))


def test_zero_workers_run_in_this_process(small_slide: SyntheticSlide) -> None:
    with open_slide(small_slide.path) as slide:
        source = slide.source()
    assert list(map_tiles(source, ["dimensions", "backend"], getattr, workers=0)) == [(1024, 768), "openslide"]


@pytest.mark.parametrize("level", [0, 1, 3, 6])
def test_png_encoding_is_lossless_and_deterministic(level: int) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    data = encode_tile(pixels, fmt="png", png_compression=level)
    assert data == encode_tile(pixels.copy(), fmt="png", png_compression=level)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)


def test_jpeg_encoding_decodes_close_to_the_pixels() -> None:
    pixels = np.full((64, 64, 3), (200, 120, 190), dtype=np.uint8)
    decoded = imagecodecs.jpeg8_decode(encode_tile(pixels, fmt="jpeg", jpeg_quality=95))
    assert np.abs(decoded.astype(int) - pixels.astype(int)).max() <= 3


def test_write_tile_names_by_position_and_records_the_hash(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    writer = TileWriter(tmp_path / "tiles", "small", 64)
    with open_slide(small_slide.path) as slide:
        tile = tile_grid(slide, target_mpp=1.0, tile_size=64, min_tissue=0.5).tiles[0]
        written = write_tile(writer, slide, tile)
    assert written.path.name == f"small_x{tile.box_level0[0]}_y{tile.box_level0[1]}.png"
    assert hashlib.sha256(written.path.read_bytes()).hexdigest() == written.sha256
    assert written.n_bytes == written.path.stat().st_size
    assert sorted(p.name for p in (tmp_path / "tiles").iterdir()) == [written.path.name]  # no temporary left


def test_worker_errors_reach_the_caller(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    writer = TileWriter(tmp_path / "tiles", "small", 64, fmt="webp")  # type: ignore[arg-type]
    with open_slide(small_slide.path) as slide:
        tiles = tile_grid(slide, target_mpp=1.0, tile_size=64, min_tissue=0.5).tiles[:2]
        source = slide.source()
    with pytest.raises(ValueError, match="unknown tile format 'webp'"):
        list(map_tiles(source, tiles, partial(write_tile, writer), workers=1))


def test_the_worker_server_preloads_only_the_reader_in_use() -> None:
    assert worker_preload("openslide") == ["__main__", "histo_daen.tiling.extract", "imagecodecs", "openslide"]
    assert worker_preload("tiffslide")[-1] == "tiffslide" and "openslide" not in worker_preload("tiffslide")
    assert worker_preload(None)[-2:] == ["openslide", "tiffslide"]  # not known yet: both
