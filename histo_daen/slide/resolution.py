"""Pure resolution maths: microns per pixel, downsamples, the pyramid level to read, level-0 <-> level frames.

No I/O here: everything takes numbers and tuples, so it is testable without a slide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "LEVEL_TOLERANCE",
    "PLAUSIBLE_MPP_RANGE",
    "best_level_for_downsample",
    "is_plausible_mpp",
    "level_box_for_level0_box",
    "mpp_hint",
]

# Microns per pixel a slide scanner or microscope camera can plausibly report at level 0. Scanners run from about
# 0.1 (100x oil) to 2 um/px (5x); 0.05-20 leaves room for odd set-ups while refusing the 72/96-dpi defaults that
# image writers leave in TIFF tags (352.8 / 264.6 um/px) and a unit mix-up of 1000x either way.
PLAUSIBLE_MPP_RANGE = (0.05, 20.0)

# Pyramid downsamples are not exact powers: a 1503-px level 0 over a 751-px level 1 gives 2.0013. A level counts
# as "not coarser than needed" within this relative tolerance, so 2.0013 still serves a request for 2.0.
LEVEL_TOLERANCE = 1e-2


def is_plausible_mpp(mpp: float | None) -> bool:
    """True for a finite microns-per-pixel value inside :data:`PLAUSIBLE_MPP_RANGE`."""
    if mpp is None or not math.isfinite(mpp):
        return False
    low, high = PLAUSIBLE_MPP_RANGE
    return low <= mpp <= high


def mpp_hint() -> str:
    """The advice every 'no usable resolution' message ends with."""
    return "Pass --slide-mpp with the scan's microns per pixel, e.g. --slide-mpp 0.25 for a 40x scan or 0.5 for 20x."


def best_level_for_downsample(level_downsamples: Sequence[float], downsample: float) -> int:
    """The coarsest pyramid level whose downsample does not exceed ``downsample`` (within :data:`LEVEL_TOLERANCE`).

    Reading from it and shrinking keeps every detail the request asks for; a coarser level would have to be
    enlarged. Level 0 is returned for ``downsample < 1`` (an upsampling request).

    Args:
        level_downsamples: level-0 pixels per level pixel, one per level, level 0 first (1.0).
        downsample: level-0 pixels per output pixel wanted.
    """
    best = 0
    for level, level_downsample in enumerate(level_downsamples):
        if level_downsample <= downsample * (1.0 + LEVEL_TOLERANCE) and level_downsample >= level_downsamples[best]:
            best = level
    return best


def level_box_for_level0_box(
    box_level0: tuple[int, int, int, int], level_downsample: float
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The level pixels covering a level-0 box: ``(xy_level, size_wh_level)``.

    Args:
        box_level0: (x, y, width, height) in level-0 pixels.
        level_downsample: level-0 pixels per level pixel.

    Returns:
        ``(x, y)`` of the first level pixel (floor) and ``(width, height)`` in level pixels (rounded, at least 1).
    """
    x, y, width, height = box_level0
    xy_level = (math.floor(x / level_downsample), math.floor(y / level_downsample))
    size_wh_level = (max(1, round(width / level_downsample)), max(1, round(height / level_downsample)))
    return xy_level, size_wh_level
