"""Tiling: tissue mask, tile grid at a target resolution, tile reads, parallel extraction, manifests, resumable jobs.

Never imports torch.
"""

from histo_daen.tiling.extract import (
    TileFile,
    TileWriter,
    default_workers,
    encode_tile,
    iter_tile_pixels,
    map_tiles,
    write_tile,
)
from histo_daen.tiling.grid import Tile, TileGrid, read_tile, tile_grid, tissue_fractions
from histo_daen.tiling.job import CohortTilingResult, SlideFailure, SlideTilingResult, tile_slide, tile_slides
from histo_daen.tiling.tissue import pen_mask, tissue_mask

__all__ = [
    "CohortTilingResult",
    "SlideFailure",
    "SlideTilingResult",
    "Tile",
    "TileFile",
    "TileGrid",
    "TileWriter",
    "default_workers",
    "encode_tile",
    "iter_tile_pixels",
    "map_tiles",
    "pen_mask",
    "read_tile",
    "tile_grid",
    "tile_slide",
    "tile_slides",
    "tissue_fractions",
    "tissue_mask",
    "write_tile",
]
