"""Tiling: tissue mask, tile grid at a target resolution, tile reads, parallel extraction, manifests, resumable jobs.

Never imports torch.
"""

from histo_daen.tiling.grid import Tile, TileGrid, read_tile, tile_grid, tissue_fractions
from histo_daen.tiling.tissue import pen_mask, tissue_mask

__all__ = [
    "Tile",
    "TileGrid",
    "pen_mask",
    "read_tile",
    "tile_grid",
    "tissue_fractions",
    "tissue_mask",
]
