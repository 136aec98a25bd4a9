"""tile_grid and read_tile: geometry, tissue fractions against ground truth, levels, identical pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histo_daen.data.synthetic_slide import SyntheticSlide
from histo_daen.errors import MissingResolutionError, SlideError
from histo_daen.slide import open_slide
from histo_daen.tiling import Tile, read_tile, tile_grid, tissue_fractions


def test_tissue_fractions_integrate_fractional_mask_pixels() -> None:
    mask = np.zeros((4, 4), dtype=bool)
    mask[:, :2] = True  # left half; each mask pixel is 2 x 2 level-0 pixels
    boxes = np.array(
        [
            [0, 0, 4, 8],  # the left half exactly
            [2, 0, 4, 8],  # straddles: half tissue
            [3, 0, 2, 2],  # level-0 x 3..5: mask column 1 (tissue) for x 3..4, column 2 (glass) for 4..5
            [6, 6, 4, 4],  # half outside the mask: outside counts as glass
        ]
    )
    np.testing.assert_allclose(tissue_fractions(mask, boxes, 2.0), [1.0, 0.5, 0.5, 0.0])


def test_grid_geometry_at_twice_the_slide_mpp(tiny_slide: SyntheticSlide) -> None:
    with open_slide(tiny_slide.path) as slide:
        grid = tile_grid(slide, target_mpp=1.0, tile_size=224, min_tissue=0.0)
    # 224 px at 1 um/px = 448 level-0 px at 0.5 um/px; read from level 1 (downsample 2) without resizing.
    assert (grid.downsample, grid.level, grid.tile_size_level0) == (2.0, 1, 448)
    assert (grid.n_cols, grid.n_rows) == (5, 4)  # the last column/row reaches the slide's edge
    assert len(grid) == 20
    assert grid.tiles[6] == Tile(1, 1, (448, 448, 448, 448), 1, grid.tiles[6].tissue_fraction)
    assert grid.tiles[-1].box_level0 == (1792, 1344, 448, 448)


def test_overlap_shortens_the_stride(tiny_slide: SyntheticSlide) -> None:
    with open_slide(tiny_slide.path) as slide:
        grid = tile_grid(slide, target_mpp=1.0, tile_size=224, overlap=32, min_tissue=0.0)
    assert grid.stride == 192
    assert grid.tiles[1].box_level0 == (384, 0, 448, 448)


def test_tile_positions_follow_the_ground_truth(tiny_slide: SyntheticSlide) -> None:
    truth = tiny_slide.read_mask() > 0
    with open_slide(tiny_slide.path) as slide:
        every = tile_grid(slide, target_mpp=1.0, tile_size=64, min_tissue=0.0)
        kept = tile_grid(slide, target_mpp=1.0, tile_size=64, min_tissue=0.5)
    boxes = np.array([tile.box_level0 for tile in every.tiles])
    truth_fraction = tissue_fractions(truth, boxes, tiny_slide.mask_downsample)
    kept_boxes = {tile.box_level0 for tile in kept.tiles}
    clearly_tissue = {tuple(b) for b, f in zip(boxes.tolist(), truth_fraction, strict=True) if f >= 0.65}
    clearly_glass = {tuple(b) for b, f in zip(boxes.tolist(), truth_fraction, strict=True) if f <= 0.35}
    assert len(clearly_tissue) > 40
    assert clearly_tissue <= kept_boxes
    assert not clearly_glass & kept_boxes
    assert kept.tissue_area_mm2 == pytest.approx(truth.sum() * (16 * 0.5 / 1000) ** 2, rel=0.08)


def test_level_is_the_coarsest_not_coarser_than_the_target(tiny_slide: SyntheticSlide) -> None:
    with open_slide(tiny_slide.path) as slide:
        assert tile_grid(slide, target_mpp=0.5, tile_size=128, min_tissue=0.0).level == 0
        assert tile_grid(slide, target_mpp=1.5, tile_size=128, min_tissue=0.0).level == 1
        assert tile_grid(slide, target_mpp=4.0, tile_size=64, min_tissue=0.0).level == 2


def test_blank_slide_has_no_tiles(blank_slide: Path) -> None:
    with open_slide(blank_slide) as slide:
        grid = tile_grid(slide, target_mpp=1.0, tile_size=64)
    assert len(grid) == 0
    assert not grid.tissue_mask.any()


def test_slide_without_mpp_cannot_be_gridded(slide_without_mpp: Path) -> None:
    with open_slide(slide_without_mpp) as slide, pytest.raises(MissingResolutionError, match="--slide-mpp"):
        tile_grid(slide, target_mpp=1.0, tile_size=64)


def test_slide_smaller_than_one_tile_says_so(tiny_tiff_slide: SyntheticSlide) -> None:
    with (
        open_slide(tiny_tiff_slide.path) as slide,
        pytest.raises(
            SlideError, match=r"tiny\.tiff: is 1024x768 px \(512x384 um\), smaller than one 224-px tile at 2 um/px"
        ),
    ):
        tile_grid(slide, target_mpp=2.0, tile_size=224)


@pytest.mark.realdata
def test_real_small_svs_is_smaller_than_one_tile(openslide_fixtures: Path) -> None:
    with (
        open_slide(openslide_fixtures / "small.svs") as slide,
        pytest.raises(SlideError, match=r"small\.svs: is 16x16 px .*smaller than one 224-px tile.*Lower --tile-size"),
    ):
        tile_grid(slide, target_mpp=1.0, tile_size=224)


@pytest.mark.realdata
def test_real_boxes_tiff_tiles_with_an_mpp_override(openslide_fixtures: Path) -> None:
    with open_slide(openslide_fixtures / "boxes.tiff", mpp_override=0.25) as slide:
        grid = tile_grid(slide, target_mpp=1.0, tile_size=32, min_tissue=0.0)
    assert (grid.n_cols, grid.n_rows, grid.level) == (3, 2, 2)  # 128-px level-0 tiles from level 2 (4.016)


def test_read_tile_at_an_exact_level_is_that_level_unchanged(tiny_slide: SyntheticSlide) -> None:
    with open_slide(tiny_slide.path) as slide:
        tile = tile_grid(slide, target_mpp=1.0, tile_size=224, min_tissue=0.0).tiles[6]
        pixels = read_tile(slide, tile, 224)
        expected = slide.read_region((448, 448), 1, (224, 224))
    np.testing.assert_array_equal(pixels, expected)


def test_read_tile_between_levels_is_an_area_average(tiny_slide: SyntheticSlide) -> None:
    with open_slide(tiny_slide.path) as slide:
        tile = tile_grid(slide, target_mpp=0.75, tile_size=100, min_tissue=0.0).tiles[7]
        assert tile.level == 0 and tile.box_level0[2] == 150
        pixels = read_tile(slide, tile, 100)
        region = slide.read_region(tile.box_level0[:2], 0, (150, 150))
    expected = np.asarray(Image.fromarray(region).resize((100, 100), Image.Resampling.BOX))
    np.testing.assert_array_equal(pixels, expected)
    assert pixels.shape == (100, 100, 3) and pixels.dtype == np.uint8


def test_read_tile_is_identical_with_either_backend(tiny_slide: SyntheticSlide) -> None:
    tiles = {}
    for backend in ("openslide", "tiffslide"):
        with open_slide(tiny_slide.path, backend=backend) as slide:
            grid = tile_grid(slide, target_mpp=1.0, tile_size=160, min_tissue=0.5)
            tiles[backend] = np.stack([read_tile(slide, tile, 160) for tile in grid.tiles[:6]])
    np.testing.assert_array_equal(tiles["openslide"], tiles["tiffslide"])


def test_use_pyramid_false_reads_level_0(tiny_slide: SyntheticSlide) -> None:
    with open_slide(tiny_slide.path) as slide:
        grid = tile_grid(slide, target_mpp=1.0, tile_size=224, min_tissue=0.0, use_pyramid=False)
        tile = grid.tiles[6]
        pixels = read_tile(slide, tile, 224)
        region = slide.read_region((448, 448), 0, (448, 448))
    assert grid.level == 0
    np.testing.assert_array_equal(pixels, np.asarray(Image.fromarray(region).resize((224, 224), Image.Resampling.BOX)))
