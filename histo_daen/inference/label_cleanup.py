"""Label clean-up of slide maps: class regions below a minimum size take the class around them, band by band.

A map's small islands (a few pixels of one class inside another) are what a pathologist reads as noise; a minimum
region size in µm² removes them where the map is meant to be read at a glance. Each class's 8-connected regions are
found with :func:`scipy.ndimage.label`; a region of fewer than ``min_pixels`` pixels takes, pixel by pixel, the class
of the nearest pixel that stays (:func:`scipy.ndimage.distance_transform_edt`). No-tissue pixels (0) never change
and tissue never becomes no-tissue, so the tissue area and the tissue outline stay those of the raw map. The class
scores written beside the labels stay the raw blended ones.

The map arrives band by band (:class:`BandCleaner`): a band is cleaned once ``halo`` rows below it are known, with
``halo`` rows above it kept from the previous band. A region that reaches the edge of that window may go on beyond
it and is kept; with ``halo >= min_pixels - 1`` such a region has at least ``min_pixels`` pixels anyway, so bands
give the same labels as the whole map at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["BandCleaner", "CleanBand", "remove_small_regions"]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def remove_small_regions(
    labels: np.ndarray, min_pixels: int, *, open_top: bool = False, open_bottom: bool = False
) -> np.ndarray:
    """Class regions smaller than ``min_pixels`` take the class of the nearest remaining tissue pixel.

    Args:
        labels: (h, w) uint8 map values, 0 = no tissue.
        min_pixels: regions (8-connected, one class) with fewer pixels are relabelled; <= 1 changes nothing.
        open_top, open_bottom: the map goes on above / below these rows: regions touching that edge are kept.

    Returns:
        (h, w) uint8, a new array (``labels`` itself when nothing changes). A region is kept when no other tissue
        pixel remains to give it a class.
    """
    if min_pixels <= 1 or labels.size == 0:
        return labels
    small = np.zeros(labels.shape, dtype=bool)
    for value in np.unique(labels):
        if value == 0:
            continue
        regions, _ = ndimage.label(labels == value, structure=_EIGHT_CONNECTED)
        too_small = np.bincount(regions.ravel()) < min_pixels
        too_small[0] = False
        if open_top:
            too_small[np.unique(regions[0])] = False
        if open_bottom:
            too_small[np.unique(regions[-1])] = False
        small |= too_small[regions]
    keep = (labels > 0) & ~small
    if not small.any() or not keep.any():
        return labels
    # Indices of the nearest kept pixel for every pixel (distance to the nearest zero of ~keep).
    nearest = ndimage.distance_transform_edt(~keep, return_distances=False, return_indices=True)
    cleaned = labels.copy()
    cleaned[small] = labels[nearest[0][small], nearest[1][small]]
    return cleaned


@dataclass(frozen=True)
class CleanBand:
    """A band whose labels are final.

    Attributes:
        index: band number.
        scores: (K, h, W) the raw blended scores, unchanged.
        labels: (h, W) uint8 cleaned map values.
    """

    index: int
    scores: np.ndarray
    labels: np.ndarray


class BandCleaner:
    """Cleans consecutive bands of a map with ``halo`` rows of context on each side (module docstring).

    Push the bands in order; :meth:`push` yields the bands that became final (the one before, once the rows below
    it are known), then :meth:`finish` yields the last. Bands pushed with ``context_only`` (recomputed before a
    resumed run's first band) lend their rows and are not handed out.

    Args:
        min_pixels: the minimum region size in map pixels.
        halo: rows of context above and below a band, at most the band height.
        band_height: rows per band (the last band may be shorter).
        map_height: rows of the whole map.
    """

    def __init__(self, *, min_pixels: int, halo: int, band_height: int, map_height: int) -> None:
        if not 0 <= halo <= band_height:
            raise ValueError(f"halo must be in [0, band_height={band_height}], got {halo}")
        self.min_pixels = min_pixels
        self.halo = halo
        self.band_height = band_height
        self.map_height = map_height
        self._above = np.zeros((0, 0), dtype=np.uint8)  # the last rows of the band before the pending one
        self._pending: tuple[int, np.ndarray, np.ndarray, bool] | None = None  # index, scores, labels, context only

    def push(
        self, index: int, scores: np.ndarray, labels: np.ndarray, *, context_only: bool = False
    ) -> Iterator[CleanBand]:
        """Band ``index`` (the next in order): scores (K, h, W), raw labels (h, W) uint8."""
        if self._pending is not None:
            if index != self._pending[0] + 1:
                raise ValueError(f"band {index} pushed after band {self._pending[0]}")
            yield from self._release(below=labels[: self.halo])
        self._pending = (index, scores, labels, context_only)

    def finish(self) -> Iterator[CleanBand]:
        """The last band, with no rows below it."""
        if self._pending is not None:
            yield from self._release(below=np.zeros((0, 0), dtype=np.uint8))  # no rows below the last band

    def _release(self, below: np.ndarray) -> Iterator[CleanBand]:
        assert self._pending is not None
        index, scores, labels, context_only = self._pending
        self._pending = None
        above = self._above if self._above.shape[1:] == labels.shape[1:] else labels[:0]
        below = below if below.shape[1:] == labels.shape[1:] else labels[:0]
        window = np.concatenate([above, labels, below])
        first_row = index * self.band_height - above.shape[0]  # map row of the window's top
        cleaned = remove_small_regions(
            window,
            self.min_pixels,
            open_top=first_row > 0,
            open_bottom=first_row + window.shape[0] < self.map_height,
        )
        self._above = labels[labels.shape[0] - self.halo :] if self.halo else labels[:0]
        if not context_only:
            rows = slice(above.shape[0], above.shape[0] + labels.shape[0])
            yield CleanBand(index, scores, np.ascontiguousarray(cleaned[rows]))
