"""Overlap stitching of tile outputs into a map, one band of rows at a time: pure NumPy, no I/O.

Each tile's output is multiplied by a blending window and added to a running weighted sum; a running sum of the
weights (the "count" map of MONAI's ``sliding_window_inference``) divides it out when a band is finished. The
window is 1 in a tile's interior and falls off over the overlap margin, so neighbouring tiles cross-fade instead of
meeting at a visible seam; it never reaches 0, so a pixel seen by only one tile's edge (the slide border) still gets
that tile's value. Where every tile agrees the result is that value exactly, whatever the weights: the identity
oracle of the tests.

Two ramp profiles. ``"linear"``: with tiles overlapping by half their size every pixel lies between two tiles on
each axis and the weights interpolate linearly between their centres (bilinear in 2-D), so where neighbouring tiles
disagree the blended score moves from one to the other evenly across the whole tile step, and the point where the
best class changes falls anywhere in it. ``"cosine"`` (raised cosine, the earlier default): the change is steepest
half-way through the overlap, so disagreements end at lines on the tile grid.

Tiles arrive in row order (non-decreasing top row). Only the rows of the band being built plus one tile height
are held, so memory is ``O(map width x (band height + tile height))`` whatever the slide's height.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["BandStitcher", "FinishedBand", "RampProfile", "blend_window", "map_values_from_scores"]

RampProfile = Literal["linear", "cosine"]

WINDOW_FLOOR = 1e-3  # the smallest weight a window gives, at a tile's outermost pixel


def _ramp(length: int, margin: int, floor: float, profile: RampProfile) -> np.ndarray:
    """1-D window: from ``floor`` up to 1 over ``margin`` pixels at both ends (linear or raised cosine), 1 between."""
    weights = np.ones(length, dtype=np.float64)
    if margin <= 0:
        return weights.astype(np.float32)
    margin = min(margin, length // 2)
    # Pixel centres of the margin sit at (i + 0.5) / margin of the way up the ramp.
    position = (np.arange(margin) + 0.5) / margin
    shape = position if profile == "linear" else 0.5 * (1.0 - np.cos(np.pi * position))
    rise = floor + (1.0 - floor) * shape
    weights[:margin] = rise
    weights[length - margin :] = rise[::-1]
    return weights.astype(np.float32)


def _window_1d(length: int, margin: int, context: int, floor: float, profile: RampProfile) -> np.ndarray:
    """``context`` pixels at ``floor`` at both ends, the ramps of :func:`_ramp` over the ``length - 2 * context``
    pixels between."""
    weights = np.full(length, floor, dtype=np.float32)
    weights[context : length - context] = _ramp(length - 2 * context, margin, floor, profile)
    return weights


def blend_window(
    shape_hw: tuple[int, int],
    margin: int,
    *,
    floor: float = WINDOW_FLOOR,
    profile: RampProfile = "cosine",
    context: int = 0,
) -> np.ndarray:
    """Weights for blending one tile's output into the map.

    Args:
        shape_hw: (height, width) of the tile output in map pixels.
        margin: pixels inside the context over which the weight ramps up (the overlap between neighbouring tiles'
            used parts); 0 gives a flat window.
        floor: smallest weight, in (0, 1].
        profile: "linear" or "cosine" (raised cosine) ramps (module docstring).
        context: pixels at each edge weighted ``floor`` only (the tile's context border: they count only where no
            other tile reaches, at the edge of the tissue).

    Returns:
        (height, width) float32 in [floor, 1], the outer product of two 1-D windows.
    """
    if not 0 < floor <= 1:
        raise ValueError(f"floor must be in (0, 1], got {floor}")
    if profile not in ("linear", "cosine"):
        raise ValueError(f"profile must be 'linear' or 'cosine', got {profile!r}")
    height, width = shape_hw
    if not 0 <= 2 * context < min(height, width):
        raise ValueError(f"context {context} must leave part of a {height} x {width} tile")
    return np.outer(
        _window_1d(height, margin, context, floor, profile), _window_1d(width, margin, context, floor, profile)
    )


@dataclass(frozen=True)
class FinishedBand:
    """A band of the map with every tile that touches it added.

    Attributes:
        index: band number; its rows are ``[index * band_height, index * band_height + values.shape[1])``.
        values: (C, h, W) float32, the weighted mean of the tile outputs covering each pixel (0 where none does).
        covered: (h, W) bool, True where at least one tile contributed.
    """

    index: int
    values: np.ndarray
    covered: np.ndarray


class BandStitcher:
    """Accumulates tile outputs (weighted sum and weight sum) and hands out finished bands in order.

    Usage: for each tile in row order, ``yield from stitcher.finished_before(y0)`` then ``stitcher.add(out, y0, x0)``;
    at the end ``yield from stitcher.finish()``. Bands before ``first_band`` (already written by an interrupted run)
    are skipped: contributions to their rows are dropped, and adding the same tiles in the same order to the same
    band gives bit-identical sums, so a resumed map equals an uninterrupted one.

    Args:
        shape_hw: (height, width) of the whole map in map pixels.
        n_channels: C, channels of each tile output.
        band_height: rows per band (the map's chunk height).
        tile_shape_hw: (height, width) of every tile output in map pixels.
        window: (tile height, tile width) float32 blending weights (:func:`blend_window`).
        first_band: the first band to build.
    """

    def __init__(
        self,
        *,
        shape_hw: tuple[int, int],
        n_channels: int,
        band_height: int,
        tile_shape_hw: tuple[int, int],
        window: np.ndarray,
        first_band: int = 0,
    ) -> None:
        if window.shape != tuple(tile_shape_hw):
            raise ValueError(f"window {window.shape} does not match tile_shape_hw {tuple(tile_shape_hw)}")
        self.shape_hw = shape_hw
        self.band_height = band_height
        self.n_bands = math.ceil(shape_hw[0] / band_height)
        self._window = window.astype(np.float32)
        self._band = first_band
        rows = band_height + tile_shape_hw[0]  # a band plus the tallest tile that can start inside it
        self._sums = np.zeros((n_channels, rows, shape_hw[1]), dtype=np.float32)
        self._weights = np.zeros((rows, shape_hw[1]), dtype=np.float32)

    @property
    def origin_row(self) -> int:
        """Map row of the first row held: the top of the band being built."""
        return self._band * self.band_height

    def add(self, values: np.ndarray, y0: int, x0: int) -> None:
        """Blend one tile output whose top-left pixel is map pixel (y0, x0); parts outside the map are cropped.

        Args:
            values: (C, tile height, tile width) float.
            y0: map row of the tile's top edge; must not lie beyond the band being built (call
                :meth:`finished_before` first) but may lie above it (rows above are dropped).
            x0: map column of the tile's left edge (may be negative or run past the right edge).
        """
        if self._band >= self.n_bands:
            return
        height, width = values.shape[1:]
        if (height, width) != self._window.shape:
            raise ValueError(f"tile output {values.shape[1:]} does not match the window {self._window.shape}")
        top = y0 - self.origin_row
        if top >= self.band_height:
            raise ValueError(f"tile at row {y0} lies beyond band {self._band}: call finished_before({y0}) first")
        # Crop to the held rows and to the map.
        src_y0, src_x0 = max(0, -top), max(0, -x0)
        dst_y0, dst_x0 = max(0, top), max(0, x0)
        dst_y1 = min(top + height, self._weights.shape[0], self.shape_hw[0] - self.origin_row)
        dst_x1 = min(x0 + width, self.shape_hw[1])
        if dst_y1 <= dst_y0 or dst_x1 <= dst_x0:
            return
        rows = slice(src_y0, src_y0 + dst_y1 - dst_y0)
        cols = slice(src_x0, src_x0 + dst_x1 - dst_x0)
        weights = self._window[rows, cols]
        self._sums[:, dst_y0:dst_y1, dst_x0:dst_x1] += values[:, rows, cols] * weights
        self._weights[dst_y0:dst_y1, dst_x0:dst_x1] += weights

    def finished_before(self, y0: int) -> Iterator[FinishedBand]:
        """Bands that no tile starting at map row ``y0`` or below can touch any more, in order."""
        while self._band < self.n_bands and (self._band + 1) * self.band_height <= y0:
            yield self._pop()

    def finish(self) -> Iterator[FinishedBand]:
        """Every band not handed out yet (call once all tiles are added)."""
        while self._band < self.n_bands:
            yield self._pop()

    def _pop(self) -> FinishedBand:
        band_rows = min(self.band_height, self.shape_hw[0] - self.origin_row)
        weights = self._weights[:band_rows]
        covered = weights > 0
        values = np.divide(
            self._sums[:, :band_rows], weights, out=np.zeros_like(self._sums[:, :band_rows]), where=covered
        )
        finished = FinishedBand(self._band, values, covered.copy())
        # Slide the held rows up by one band; the freed rows at the bottom start from zero.
        self._sums = np.roll(self._sums, -self.band_height, axis=1)
        self._weights = np.roll(self._weights, -self.band_height, axis=0)
        self._sums[:, -self.band_height :] = 0
        self._weights[-self.band_height :] = 0
        self._band += 1
        return finished


def map_values_from_scores(
    scores: np.ndarray, is_tissue: np.ndarray, *, allowed: np.ndarray | None = None
) -> np.ndarray:
    """Slide-map labels from stitched class scores: the best allowed class's map value on tissue, 0 elsewhere.

    Args:
        scores: (K, h, w) float class scores.
        is_tissue: (h, w) bool, True where the pixel is tissue and at least one tile covered it.
        allowed: (K, h, w) bool, the classes each pixel may take (blended presence above its threshold); where no
            class is allowed, all are. None: all classes everywhere.

    Returns:
        (h, w) uint8: 0 = no tissue, ``k + 1`` = class index k (``TissueClass.map_value``). Ties go to the lower
        class index (``argmax``).
    """
    if allowed is not None:
        allowed = allowed | ~allowed.any(axis=0, keepdims=True)
        scores = np.where(allowed, scores, -np.inf)
    best = scores.argmax(axis=0).astype(np.uint8) + 1
    return np.where(is_tissue, best, 0).astype(np.uint8)
