"""Tiling: tissue mask, tile grid at a target resolution, tile reads, parallel extraction, manifests, one slide's
resumable tile folder (cohorts: :mod:`histo_daen.jobs.tile`).

Never imports torch. Names load lazily (PEP 562): a worker process that imports :mod:`histo_daen.tiling.extract`
does not pay for scikit-image, tqdm or the config loader, which only the parent needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TileFile": "extract",
    "TileWriter": "extract",
    "default_workers": "extract",
    "encode_tile": "extract",
    "iter_tile_pixels": "extract",
    "map_tiles": "extract",
    "warm_up_workers": "extract",
    "write_tile": "extract",
    "SlideTissue": "grid",
    "Tile": "grid",
    "TileGrid": "grid",
    "read_tile": "grid",
    "find_tissue": "grid",
    "tile_grid": "grid",
    "tissue_fractions": "grid",
    "SlideTilingResult": "folder",
    "tile_slide": "folder",
    "write_tiling_pictures": "pictures",
    "pen_mask": "tissue",
    "tissue_mask": "tissue",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"histo_daen.tiling.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'histo_daen.tiling' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
