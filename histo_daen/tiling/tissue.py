"""Tissue or glass: a boolean mask from a low-resolution picture of the slide. Pure: arrays in, arrays out.

Stained tissue is coloured and glass is grey, so the mask thresholds *saturation*, not brightness: pale eosin
stroma is nearly as bright as glass but still pink. What else is coloured or dark on a slide is removed:

- pen marks: blue and green ink (hues no H&E stain has) and black ink (too dark to be stained tissue), with a
  margin for the blended edge of a stroke;
- dust, debris and tiny specks: connected pieces smaller than ``min_object_um2``;
- holes in the tissue smaller than ``max_hole_um2`` (gland lumens, tears, fat cells) count as tissue.

Red ink is as red as eosin and is *not* removed; a slide circled in red needs its marks cleaned.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["pen_mask", "tissue_mask"]


def _hue_saturation_value(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(h, w, 3) float32 RGB in [0, 255] -> hue in degrees [0, 360), saturation [0, 1], value [0, 255]."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=2)
    spread = value - rgb.min(axis=2)
    saturation = spread / np.maximum(value, 1.0)
    safe = np.maximum(spread, 1e-6)
    hue = np.where(
        value == red,
        ((green - blue) / safe) % 6.0,
        np.where(value == green, (blue - red) / safe + 2.0, (red - green) / safe + 4.0),
    )
    return (hue * 60.0) % 360.0, saturation, value


def pen_mask(thumbnail: np.ndarray, *, margin_px: int = 2) -> np.ndarray:
    """Where a thumbnail shows marker ink: blue, green or black, grown by ``margin_px`` for blended stroke edges.

    Args:
        thumbnail: (h, w, 3) uint8 RGB.
        margin_px: pixels added around ink (the anti-aliased rim of a stroke is paler but still ink).

    Returns:
        (h, w) bool, True on ink.
    """
    rgb = thumbnail.astype(np.float32)
    hue, saturation, value = _hue_saturation_value(rgb)
    # Haematoxylin is violet-blue (hue about 250-300 degrees) and never strongly saturated; blue ink sits at
    # 200-245 degrees and is; green ink is at a hue no H&E stain reaches.
    blue_ink = (hue >= 190.0) & (hue <= 248.0) & (saturation >= 0.45)
    green_ink = (hue >= 70.0) & (hue <= 180.0) & (saturation >= 0.2)
    black_ink = value < 60.0
    ink = blue_ink | green_ink | black_ink
    if margin_px > 0 and ink.any():
        ink = ndimage.binary_dilation(ink, structure=_disk(margin_px))
    return ink


def _disk(radius: int) -> np.ndarray:
    """(2r + 1, 2r + 1) bool disc, the structuring element of a round dilation."""
    offsets = np.arange(-radius, radius + 1)
    return offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius


def _without_small_pieces(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """``mask`` without 4-connected pieces smaller than ``min_pixels``."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def tissue_mask(
    thumbnail: np.ndarray,
    *,
    thumbnail_mpp: float = 8.0,
    min_saturation: float = 0.05,
    min_object_um2: float = 20_000.0,
    max_hole_um2: float = 40_000.0,
    remove_pen: bool = True,
) -> np.ndarray:
    """Tell tissue from glass on a low-resolution picture of a slide.

    Args:
        thumbnail: (h, w, 3) uint8 RGB, transparent pixels composited on white (what ``Slide`` returns).
        thumbnail_mpp: microns per pixel of the thumbnail, to size the object and hole limits.
        min_saturation: HSV saturation in [0, 1] above which a (lightly smoothed) pixel counts as stained.
            Glass is about 0.0-0.03; pale eosin stroma about 0.08-0.2.
        min_object_um2: pieces smaller than this (square micrometres) are dust, not tissue (default: a 160-um disc).
        max_hole_um2: holes smaller than this inside tissue are filled (default: a 225-um disc).
        remove_pen: drop blue, green and black marker ink (see :func:`pen_mask`).

    Returns:
        (h, w) bool, True on tissue. An all-False mask is a valid answer; callers decide if it is an error.
    """
    if thumbnail.ndim != 3 or thumbnail.shape[2] != 3 or thumbnail.dtype != np.uint8:
        raise ValueError(f"expected an (h, w, 3) uint8 thumbnail, got {thumbnail.shape} {thumbnail.dtype}")
    if not thumbnail_mpp > 0:
        raise ValueError(f"thumbnail_mpp must be positive, got {thumbnail_mpp}")
    # No blur: it would grow the mask by a pixel all round. Noise on glass stays far below the threshold, and
    # what noise does pass is removed with the dust below.
    _, saturation, _ = _hue_saturation_value(thumbnail.astype(np.float32))
    mask = saturation >= min_saturation
    if remove_pen:
        mask &= ~pen_mask(thumbnail)
    pixel_area_um2 = thumbnail_mpp * thumbnail_mpp
    # Close one-pixel gaps (nuclei-poor seams between regions) before judging sizes.
    mask = ndimage.binary_closing(mask, structure=_disk(1), border_value=0) | mask
    min_pixels = round(min_object_um2 / pixel_area_um2)
    if min_pixels > 1:
        mask = _without_small_pieces(mask, min_pixels)
    max_hole_pixels = round(max_hole_um2 / pixel_area_um2)
    if max_hole_pixels > 0:
        # Holes are pieces of glass not connected to the border; fill those up to the size limit.
        glass = ~mask
        labels, count = ndimage.label(glass)
        if count:
            sizes = np.bincount(labels.ravel(), minlength=count + 1)
            border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
            fill = sizes <= max_hole_pixels
            fill[0] = False
            fill[border] = False
            mask = mask | fill[labels]
    return mask
