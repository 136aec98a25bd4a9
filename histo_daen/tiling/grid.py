"""The tile grid of a slide at a target resolution, and reading one tile. Computing a grid reads only a thumbnail.

Geometry (all stored coordinates are level-0 pixels). With the slide's level-0 resolution ``mpp0`` and the target
``target_mpp``, one target pixel is ``d = target_mpp / mpp0`` level-0 pixels. Tile ``(col, row)`` covers the
level-0 box ``(round(col * s), round(row * s), round(tile_size * d), round(tile_size * d))`` with the stride
``s = (tile_size - overlap) * d``. The grid starts at the slide's top-left corner and stops at the first tile that
reaches the right (bottom) edge; tiles that stick out are padded with white. A tile is read from the coarsest
pyramid level not coarser than ``d`` and resized to ``tile_size`` with area averaging (antialiased).
"""

from __future__ import annotations

import importlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np
from PIL import Image

from histo_daen.errors import SlideError
from histo_daen.resources import require_memory
from histo_daen.slide import Slide
from histo_daen.slide.resolution import level_box_for_level0_box

__all__ = [
    "GRID_CELL_BYTES",
    "THUMBNAIL_PIXEL_BYTES",
    "GridHints",
    "SlideTissue",
    "Tile",
    "TileGrid",
    "find_tissue",
    "read_tile",
    "tile_grid",
    "tissue_fractions",
]

# Peak memory per grid position while a grid is laid (coordinates, boxes, tissue-fraction temporaries, a Tile per
# kept position): about 430 bytes measured with every position kept, rounded up.
GRID_CELL_BYTES = 512
# Peak memory per pixel of the tissue thumbnail: the RGB read (3) plus the tissue detector's planes (60 measured with
# tracemalloc on a 2048 x 1536 thumbnail), rounded up.
THUMBNAIL_PIXEL_BYTES = 72


@dataclass(frozen=True)
class Tile:
    """One tile of a grid.

    Attributes:
        col, row: position in the grid (0-based); tile ``(col, row)`` starts ``col`` strides right of the origin.
        box_level0: (x, y, width, height) in level-0 pixels.
        level: the pyramid level it is read from.
        tissue_fraction: share of the box that the tissue mask marks as tissue, in [0, 1].
    """

    col: int
    row: int
    box_level0: tuple[int, int, int, int]
    level: int
    tissue_fraction: float


@dataclass(frozen=True, eq=False)
class TileGrid:
    """The tissue tiles of one slide at a target resolution. Pure data: no slide handle inside.

    Attributes:
        tiles: the kept tiles (tissue fraction >= ``min_tissue``), row by row, left to right.
        target_mpp: microns per pixel of the tiles.
        tile_size: tile side in target pixels.
        overlap: target pixels shared by neighbouring tiles.
        min_tissue: the tissue fraction a tile needed.
        slide_mpp: level-0 microns per pixel used.
        downsample: level-0 pixels per target pixel (``target_mpp / slide_mpp``).
        level: pyramid level the tiles are read from.
        n_cols, n_rows: the size of the full grid (kept or not).
        tissue_mask: (h, w) bool tissue mask the fractions were computed from.
        tissue_downsample: level-0 pixels per tissue-mask pixel.
        thumbnail: (h, w, 3) uint8 RGB the mask was computed from (same grid as the mask).
    """

    tiles: tuple[Tile, ...]
    target_mpp: float
    tile_size: int
    overlap: int
    min_tissue: float
    slide_mpp: float
    downsample: float
    level: int
    n_cols: int
    n_rows: int
    tissue_mask: np.ndarray
    tissue_downsample: float
    thumbnail: np.ndarray

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    @property
    def stride(self) -> int:
        """Tile pitch in target pixels."""
        return self.tile_size - self.overlap

    @property
    def tile_size_level0(self) -> int:
        """Tile side in level-0 pixels."""
        return round(self.tile_size * self.downsample)

    @property
    def tissue_area_mm2(self) -> float:
        """Area the tissue mask covers, in square millimetres."""
        pixel_mm = self.tissue_downsample * self.slide_mpp / 1000.0
        return float(self.tissue_mask.sum()) * pixel_mm * pixel_mm


@dataclass(frozen=True, eq=False)
class SlideTissue:
    """A slide's tissue mask and the picture it was computed on.

    Attributes:
        thumbnail: (h, w, 3) uint8 RGB, the whole slide shrunk to about ``tissue_mpp``.
        mask: (h, w) bool, True on tissue (:func:`~histo_daen.tiling.tissue.tissue_mask`).
        downsample_xy: level-0 pixels per mask pixel along x and along y (exact after rounding the size).
        slide_mpp: level-0 microns per pixel.
    """

    thumbnail: np.ndarray
    mask: np.ndarray
    downsample_xy: tuple[float, float]
    slide_mpp: float

    @property
    def downsample(self) -> float:
        """Level-0 pixels per mask pixel (mean of the two axes)."""
        return float(np.mean(self.downsample_xy))

    @property
    def area_mm2(self) -> float:
        """Tissue area in square millimetres."""
        pixel_mm = self.downsample * self.slide_mpp / 1000.0
        return float(self.mask.sum()) * pixel_mm * pixel_mm


def find_tissue(slide: Slide, *, tissue_mpp: float = 8.0) -> SlideTissue:
    """Read a slide at about ``tissue_mpp`` microns per pixel and find its tissue.

    Raises:
        MissingResolutionError: the slide has no usable mpp.
        ValueError: ``tissue_mpp`` is not positive.
    """
    if not tissue_mpp > 0:
        raise ValueError(f"tissue_mpp must be positive, got {tissue_mpp}")
    slide_mpp = slide.require_mpp()
    width0, height0 = slide.dimensions
    # The mask's module (scipy.ndimage: about half a second to import; only where a mask is made, not in tile
    # workers) loads in a thread while the thumbnail is read, which waits on the slide library outside the GIL.
    loading = threading.Thread(target=importlib.import_module, args=("histo_daen.tiling.tissue",), daemon=True)
    loading.start()
    thumbnail = slide.downsampled(max(1.0, tissue_mpp / slide_mpp))
    loading.join()
    from histo_daen.tiling.tissue import tissue_mask

    scale = (width0 / thumbnail.shape[1], height0 / thumbnail.shape[0])
    mask = tissue_mask(thumbnail, thumbnail_mpp=slide_mpp * float(np.mean(scale)))
    return SlideTissue(thumbnail=thumbnail, mask=mask, downsample_xy=scale, slide_mpp=slide_mpp)


def tissue_fractions(
    mask: np.ndarray, boxes_level0: np.ndarray, mask_downsample: tuple[float, float] | float
) -> np.ndarray:
    """Share of each level-0 box covered by a tissue mask, with exact fractional coverage of mask pixels.

    Args:
        mask: (h, w) bool tissue mask.
        boxes_level0: (N, 4) boxes (x, y, width, height) in level-0 pixels.
        mask_downsample: level-0 pixels per mask pixel, one number or (along x, along y).

    Returns:
        (N,) float64 in [0, 1]; parts of a box outside the mask count as glass.
    """
    # np.isscalar's TypeIs gives numpy's whole scalar union (str, bytes, ...) in one branch, float in the other.
    if np.isscalar(mask_downsample):
        scale_x = scale_y = cast(float, mask_downsample)
    else:
        scale_x, scale_y = cast(tuple[float, float], mask_downsample)
    boxes = np.asarray(boxes_level0, dtype=np.float64).reshape(-1, 4)
    height, width = mask.shape
    # Summed-area table with a zero first row/column; bilinear interpolation of it at fractional corners is the
    # exact integral of the piecewise-constant mask over the box.
    table = np.zeros((height + 1, width + 1), dtype=np.float64)
    table[1:, 1:] = mask.astype(np.float64).cumsum(axis=0).cumsum(axis=1)

    def integral(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x = np.clip(x, 0.0, width)
        y = np.clip(y, 0.0, height)
        x0 = np.minimum(np.floor(x).astype(np.int64), width - 1)
        y0 = np.minimum(np.floor(y).astype(np.int64), height - 1)
        fx, fy = x - x0, y - y0
        top = table[y0, x0] * (1 - fx) + table[y0, x0 + 1] * fx
        bottom = table[y0 + 1, x0] * (1 - fx) + table[y0 + 1, x0 + 1] * fx
        return top * (1 - fy) + bottom * fy

    x0, y0 = boxes[:, 0] / scale_x, boxes[:, 1] / scale_y
    x1, y1 = (boxes[:, 0] + boxes[:, 2]) / scale_x, (boxes[:, 1] + boxes[:, 3]) / scale_y
    covered = integral(x1, y1) - integral(x0, y1) - integral(x1, y0) + integral(x0, y0)
    area = (x1 - x0) * (y1 - y0)
    return np.clip(covered / np.maximum(area, 1e-12), 0.0, 1.0)


@dataclass(frozen=True)
class GridHints:
    """The advice of :func:`tile_grid`'s two refusals, in the words of the command that asked for the grid.

    Attributes:
        too_small: the slide is smaller than one tile.
        too_many: the grid has more positions than memory holds.
    """

    too_small: str = "Lower --tile-size or --target-mpp, or check --slide-mpp."
    too_many: str = "Raise --target-mpp or --tile-size (or check --slide-mpp)."


def tile_grid(
    slide: Slide,
    *,
    target_mpp: float,
    tile_size: int,
    overlap: int = 0,
    min_tissue: float = 0.5,
    tissue_mpp: float = 8.0,
    use_pyramid: bool = True,
    hints: GridHints | None = None,
) -> TileGrid:
    """Find the tissue on a slide and lay a grid of tiles at ``target_mpp`` over it.

    Args:
        slide: an open slide with a known resolution (``slide.require_mpp()``).
        target_mpp: microns per pixel of the tiles (1.0: LUAD-HistoSeg patches).
        tile_size: tile side in target pixels.
        overlap: target pixels shared by neighbouring tiles, ``0 <= overlap < tile_size``.
        min_tissue: keep tiles whose tissue fraction is at least this, in [0, 1] (0 keeps every tile).
        tissue_mpp: microns per pixel of the thumbnail the tissue mask is computed on.
        use_pyramid: read tiles from the coarsest pyramid level fine enough (fast); False reads level 0 and
            shrinks it (slower; avoids the scanner's own downsampling and re-compression of lower levels).
        hints: what the caller's user can change when the slide is smaller than a tile or the grid too big
            (default: the ``tile`` command's options).

    Returns:
        The grid (possibly with no tiles: callers decide whether that is an error).

    Raises:
        MissingResolutionError: the slide has no usable mpp.
        SlideError: the slide is smaller than one tile.
        ValueError: invalid sizes.
    """
    if tile_size < 1 or not 0 <= overlap < tile_size:
        raise ValueError(f"need tile_size >= 1 and 0 <= overlap < tile_size, got {tile_size}, {overlap}")
    if not target_mpp > 0 or not tissue_mpp > 0:
        raise ValueError(f"target_mpp and tissue_mpp must be positive, got {target_mpp}, {tissue_mpp}")
    if not 0.0 <= min_tissue <= 1.0:
        raise ValueError(f"min_tissue must be in [0, 1], got {min_tissue}")
    slide_mpp = slide.require_mpp()
    downsample = target_mpp / slide_mpp
    width0, height0 = slide.dimensions
    tile_level0 = tile_size * downsample
    if width0 < tile_level0 or height0 < tile_level0:
        raise SlideError(
            slide.path,
            f"is {width0}x{height0} px ({width0 * slide_mpp:.0f}x{height0 * slide_mpp:.0f} um), smaller than one "
            f"{tile_size}-px tile at {target_mpp:g} um/px ({tile_level0:.0f} px at level 0)",
            (hints or GridHints()).too_small,
        )
    stride_level0 = (tile_size - overlap) * downsample
    n_cols = math.ceil((width0 - tile_level0) / stride_level0 - 1e-9) + 1
    n_rows = math.ceil((height0 - tile_level0) / stride_level0 - 1e-9) + 1
    # Both estimates come before their allocations: a typo'd --target-mpp 0.0001 asks for billions of positions.
    require_memory(
        n_cols * n_rows * GRID_CELL_BYTES,
        what=f"{slide.path.name}: the grid of {n_cols} x {n_rows} = {n_cols * n_rows:,} tile positions "
        f"({tile_size}-px tiles at {target_mpp:g} um/px on a {width0}x{height0} slide at {slide_mpp:g} um/px)",
        hint=(hints or GridHints()).too_many,
    )
    tissue_downsample = max(1.0, tissue_mpp / slide_mpp)
    require_memory(
        (width0 / tissue_downsample) * (height0 / tissue_downsample) * THUMBNAIL_PIXEL_BYTES,
        what=f"{slide.path.name}: the tissue thumbnail at {tissue_mpp:g} um/px "
        f"({width0 / tissue_downsample:.0f}x{height0 / tissue_downsample:.0f} px)",
        hint="Raise tissue_mpp (default 8).",
    )
    side = round(tile_level0)
    col_grid, row_grid = np.meshgrid(np.arange(n_cols), np.arange(n_rows))
    cols, rows = col_grid.ravel(), row_grid.ravel()
    xs = np.round(cols * stride_level0).astype(np.int64)
    ys = np.round(rows * stride_level0).astype(np.int64)
    boxes = np.stack([xs, ys, np.full_like(xs, side), np.full_like(xs, side)], axis=1)

    tissue = find_tissue(slide, tissue_mpp=tissue_mpp)
    fractions = tissue_fractions(tissue.mask, boxes, tissue.downsample_xy)
    level = slide.best_level_for_downsample(downsample) if use_pyramid else 0
    keep = fractions >= min_tissue
    tiles = tuple(
        Tile(int(c), int(r), (int(x), int(y), side, side), level, round(float(f), 6))
        for c, r, x, y, f in zip(cols[keep], rows[keep], xs[keep], ys[keep], fractions[keep], strict=True)
    )
    return TileGrid(
        tiles=tiles,
        target_mpp=float(target_mpp),
        tile_size=int(tile_size),
        overlap=int(overlap),
        min_tissue=float(min_tissue),
        slide_mpp=float(slide_mpp),
        downsample=float(downsample),
        level=level,
        n_cols=int(n_cols),
        n_rows=int(n_rows),
        tissue_mask=tissue.mask,
        tissue_downsample=tissue.downsample,
        thumbnail=tissue.thumbnail,
    )


def read_tile(slide: Slide, tile: Tile, tile_size: int) -> np.ndarray:
    """Read one tile: its box from ``tile.level``, resized to ``tile_size`` with area averaging.

    The same tile gives the same pixels in any process and with either slide library (for formats both read).

    Returns:
        (tile_size, tile_size, 3) uint8 RGB.
    """
    level_downsample = slide.level_downsamples[tile.level]
    _, size_wh_level = level_box_for_level0_box(tile.box_level0, level_downsample)
    pixels = slide.read_region(tile.box_level0[:2], tile.level, size_wh_level)
    if size_wh_level == (tile_size, tile_size):
        return pixels
    image = Image.fromarray(pixels)
    shrinking = size_wh_level[0] > tile_size
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
    return np.asarray(image.resize((tile_size, tile_size), resample))
