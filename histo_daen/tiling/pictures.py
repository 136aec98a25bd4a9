"""The pictures of a tiling output: the thumbnail, the tissue mask and the kept tiles drawn on the thumbnail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from histo_daen.atomic import atomic_write
from histo_daen.slide import Slide
from histo_daen.tiling.grid import TileGrid

__all__ = ["write_tiling_pictures"]

_PICTURE_SIDE = 1024  # thumbnail.png and tiles.png are at most this big


def write_tiling_pictures(folder: Path, slide: Slide, grid: TileGrid) -> None:
    """thumbnail.png, tissue_mask.png (one pixel per mask pixel: ``grid.tissue_downsample`` level-0 pixels, white =
    tissue) and tiles.png (the thumbnail with the tissue outline in green and the kept tiles in blue)."""
    if max(grid.thumbnail.shape[:2]) >= _PICTURE_SIDE // 2:  # the tissue mask's picture is big enough: no new read
        thumbnail = Image.fromarray(grid.thumbnail)
    else:
        thumbnail = Image.fromarray(slide.thumbnail(_PICTURE_SIDE))
    with atomic_write(folder / "thumbnail.png") as tmp:
        thumbnail.save(tmp, format="PNG", compress_level=1)
    mask = grid.tissue_mask
    with atomic_write(folder / "tissue_mask.png") as tmp:
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG", compress_level=1)
    mask_picture = np.asarray(
        Image.fromarray(mask.astype(np.uint8) * 255).resize(thumbnail.size, Image.Resampling.NEAREST)
    )
    inside = mask_picture > 0
    eroded = np.asarray(Image.fromarray(mask_picture).filter(ImageFilter.MinFilter(3))) > 0
    pixels = np.array(thumbnail.convert("RGB"))
    pixels[inside & ~eroded] = (20, 170, 60)
    overview = Image.fromarray(pixels)
    draw = ImageDraw.Draw(overview)
    scale = thumbnail.size[0] / slide.dimensions[0]
    for tile in grid.tiles:
        x, y, width, height = (value * scale for value in tile.box_level0)
        draw.rectangle((x, y, x + width - 1, y + height - 1), outline=(40, 90, 220))
    with atomic_write(folder / "tiles.png") as tmp:
        overview.save(tmp, format="PNG", compress_level=1)
