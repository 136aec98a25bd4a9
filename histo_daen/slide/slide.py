"""``open_slide``: the one way to open a whole-slide image, and the :class:`Slide` it returns.

A slide is validated when it opens (one read per pyramid level), so a truncated or corrupt file fails at once
with a message naming it, not halfway through a job. Reads are ``(h, w, 3) uint8`` RGB with transparent pixels
composited on white, whichever library reads the file.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
from PIL import Image

from histo_daen.errors import MissingResolutionError, SlideError
from histo_daen.slide.backends import (
    BackendName,
    BackendRefusedError,
    SlideBackend,
    backend_read_errors,
    error_text,
    library_label,
    open_backend,
)
from histo_daen.slide.resolution import PLAUSIBLE_MPP_RANGE, best_level_for_downsample, is_plausible_mpp, mpp_hint

__all__ = ["BackendChoice", "Slide", "SlideSource", "open_slide"]

logger = logging.getLogger(__name__)

BackendChoice = Literal["auto", "openslide", "tiffslide"]

# Bytes hashed from each end of the file for Slide.identity(): the TIFF header and IFDs (tifffile and most
# scanners put them first) and the last tiles. Hashing whole multi-GB slides would cost more than tiling them.
_HASHED_BYTES = 1 << 20

# Rows of a pyramid level read at once by Slide.downsampled(): bounds memory for single-level gigapixel files.
_BAND_PIXELS = 1 << 24


@dataclass(frozen=True)
class SlideSource:
    """How to open a slide again in another process (slide handles do not pickle and must not cross ``fork``).

    Attributes:
        path: the slide file.
        backend: the library that opened it (not ``"auto"``, so workers skip the fallback).
        mpp_override: the ``--slide-mpp`` value, if any.
    """

    path: Path
    backend: BackendChoice
    mpp_override: float | None = None

    def open(self, *, validate: bool = False) -> Slide:
        """Open the slide; validation is off by default because the parent process validated it already."""
        return open_slide(self.path, backend=self.backend, mpp_override=self.mpp_override, validate=validate)


class Slide:
    """An open whole-slide image. Use :func:`open_slide` to make one, as a context manager.

    Frames: ``xy_level0`` locations are level-0 pixels (what QuPath and OpenSlide use); ``size_wh`` sizes are
    (width, height) in pixels of the level being read; arrays are (height, width, 3).

    Attributes:
        path: the file.
        backend: ``"openslide"`` or ``"tiffslide"``, the library reading it.
        dimensions: (width, height) of level 0 in pixels.
        level_count, level_dimensions, level_downsamples: the pyramid, level 0 first; downsamples are level-0
            pixels per level pixel (1.0 for level 0).
        mpp: level-0 microns per pixel: the override if given, else the file's own value when plausible, else None.
        mpp_source: ``"override"``, ``"metadata"`` or None.
        metadata_mpp: the file's own value, plausible or not (None when absent).
        vendor: the format the library detected (``"aperio"``, ``"generic-tiff"``, ...), or None.
        properties: the library's metadata, as it reports it.
    """

    def __init__(
        self,
        path: Path,
        backend: SlideBackend,
        *,
        mpp_override: float | None = None,
        refusals: tuple[str, ...] = (),
    ) -> None:
        self.path = path
        self._refusals = refusals  # why libraries tried before this one refused the file, for read errors
        self._backend = backend
        self.backend: BackendName = backend.name
        self.dimensions: tuple[int, int] = (int(backend.dimensions[0]), int(backend.dimensions[1]))
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(
            (int(w), int(h)) for w, h in backend.level_dimensions
        )
        self.level_downsamples: tuple[float, ...] = tuple(backend.level_downsamples)
        self.level_count = len(self.level_dimensions)
        self.vendor = backend.vendor
        self.properties: dict[str, Any] = backend.properties
        self.metadata_mpp = backend.metadata_mpp()
        self.mpp_override = mpp_override
        if mpp_override is not None:
            self.mpp: float | None = float(mpp_override)
            self.mpp_source: str | None = "override"
            file_mpp = self.metadata_mpp
            if file_mpp is not None and is_plausible_mpp(file_mpp) and abs(file_mpp - mpp_override) > 0.05 * file_mpp:
                logger.warning(
                    "%s: --slide-mpp %.4g overrides the file's own %.4g um/px", path.name, mpp_override, file_mpp
                )
        elif is_plausible_mpp(self.metadata_mpp):
            self.mpp, self.mpp_source = self.metadata_mpp, "metadata"
        else:
            self.mpp, self.mpp_source = None, None

    # -- lifetime -------------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        width, height = self.dimensions
        mpp = "no mpp" if self.mpp is None else f"{self.mpp:g} um/px"
        return f"Slide({str(self.path)!r}, {self.backend}, {width}x{height}, {self.level_count} levels, {mpp})"

    def source(self) -> SlideSource:
        """A picklable recipe to open this slide again in a worker process."""
        return SlideSource(self.path, self.backend, self.mpp_override)

    # -- resolution -----------------------------------------------------------------------------------------------

    def require_mpp(self) -> float:
        """Level-0 microns per pixel, or :class:`MissingResolutionError` saying what to pass."""
        if self.mpp is not None:
            return self.mpp
        if self.metadata_mpp is None:
            problem = "the file has no microns-per-pixel metadata (no vendor MPP and no TIFF resolution tags)"
        else:
            low, high = PLAUSIBLE_MPP_RANGE
            problem = (
                f"the file says {self.metadata_mpp:.4g} um/px, outside the plausible {low:g}-{high:g} um/px of a "
                "scanner (a 72-dpi default left by the writing software?)"
            )
        raise MissingResolutionError(self.path, problem, mpp_hint())

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (level-0 pixels per output pixel)."""
        return best_level_for_downsample(self.level_downsamples, downsample)

    # -- reading --------------------------------------------------------------------------------------------------

    def read_region(self, xy_level0: tuple[int, int], level: int, size_wh: tuple[int, int]) -> np.ndarray:
        """Read ``size_wh`` pixels of ``level`` whose top-left corner is at ``xy_level0``.

        Args:
            xy_level0: (x, y) of the top-left corner in level-0 pixels.
            level: pyramid level, 0 = full resolution.
            size_wh: (width, height) in pixels of ``level``.

        Returns:
            (height, width, 3) uint8 RGB; pixels outside the slide or transparent are white.

        Raises:
            SlideError: the file cannot be decoded there (truncated, corrupt).
        """
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} out of range: {self.path.name} has levels 0..{self.level_count - 1}")
        width, height = size_wh
        if width < 1 or height < 1:
            raise ValueError(f"size_wh must be positive, got {size_wh}")
        try:
            return self._backend.read_region((int(xy_level0[0]), int(xy_level0[1])), level, (int(width), int(height)))
        except backend_read_errors() as err:
            reasons = "; ".join((*self._refusals, f"{library_label(self.backend)}: {error_text(err)}"))
            raise SlideError(
                self.path,
                f"cannot be decoded at level {level} near ({xy_level0[0]}, {xy_level0[1]}): the file is truncated, "
                f"corrupt or uses a compression the slide libraries do not support ({reasons})",
                "Copy or export the slide again, e.g. as a JPEG or Deflate tiled TIFF.",
            ) from err

    def downsampled(self, downsample: float) -> np.ndarray:
        """The whole slide shrunk by ``downsample`` (level-0 pixels per output pixel), area-averaged.

        Reads the coarsest level that is fine enough, band by band, so memory stays bounded for big single-level
        files.

        Returns:
            (round(h0 / downsample), round(w0 / downsample), 3) uint8 RGB, each side at least 1.
        """
        if not downsample > 0:
            raise ValueError(f"downsample must be positive, got {downsample}")
        width0, height0 = self.dimensions
        out_w, out_h = max(1, round(width0 / downsample)), max(1, round(height0 / downsample))
        level = self.best_level_for_downsample(downsample)
        level_w, level_h = self.level_dimensions[level]
        level_downsample = self.level_downsamples[level]
        rows_per_band = max(1, _BAND_PIXELS // max(1, level_w))
        out = np.empty((out_h, out_w, 3), dtype=np.uint8)
        out_row = 0
        for band_top in range(0, level_h, rows_per_band):
            band_bottom = min(level_h, band_top + rows_per_band)
            # Output rows covered by this band, so consecutive bands tile the output without gaps or overlap.
            next_out_row = out_h if band_bottom == level_h else round(band_bottom * out_h / level_h)
            if next_out_row <= out_row:
                continue
            xy_level0 = (0, round(band_top * level_downsample))
            band = self.read_region(xy_level0, level, (level_w, band_bottom - band_top))
            resized = Image.fromarray(band).resize((out_w, next_out_row - out_row), Image.Resampling.BOX)
            out[out_row:next_out_row] = np.asarray(resized)
            out_row = next_out_row
        return out

    def thumbnail(self, max_side: int) -> np.ndarray:
        """The whole slide with its longer side ``max_side`` pixels (never enlarged): (h, w, 3) uint8 RGB."""
        if max_side < 1:
            raise ValueError(f"max_side must be at least 1, got {max_side}")
        downsample = max(1.0, max(self.dimensions) / max_side)
        return self.downsampled(downsample)

    # -- identity -------------------------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """What identifies this slide in manifests: enough to notice a different or rewritten file.

        Returns:
            ``path`` (absolute, str), ``name``, ``size_bytes``, ``dimensions`` ([w, h] level 0), ``level_count``,
            ``mpp`` (None when unknown), ``mpp_source``, ``vendor`` and ``header_sha256``: SHA-256 of the file
            size and its first and last MiB (the TIFF header, IFDs and last tiles), cheap even for huge files.
        """
        size_bytes = self.path.stat().st_size
        digest = hashlib.sha256(str(size_bytes).encode())
        with open(self.path, "rb") as handle:
            digest.update(handle.read(_HASHED_BYTES))
            if size_bytes > _HASHED_BYTES:
                handle.seek(max(_HASHED_BYTES, size_bytes - _HASHED_BYTES))
                digest.update(handle.read(_HASHED_BYTES))
        return {
            "path": str(self.path.resolve()),
            "name": self.path.name,
            "size_bytes": size_bytes,
            "dimensions": list(self.dimensions),
            "level_count": self.level_count,
            "mpp": self.mpp,
            "mpp_source": self.mpp_source,
            "vendor": self.vendor,
            "header_sha256": digest.hexdigest(),
        }

    # -- validation -----------------------------------------------------------------------------------------------

    def validate(self) -> None:
        """Read the first and last pixels of every level, so truncated or corrupt files fail now, with a message.

        The last pixels of a level lie in the last tile written for it: a truncated file loses those first.
        """
        for level, (level_w, level_h) in enumerate(self.level_dimensions):
            if level_w < 1 or level_h < 1:
                raise SlideError(self.path, f"level {level} is empty ({level_w}x{level_h} px)", "The file is damaged.")
            downsample = self.level_downsamples[level]
            corners = {(0, 0), (level_w - 1, level_h - 1)}
            for x_level, y_level in sorted(corners):
                xy_level0 = (math.floor(x_level * downsample), math.floor(y_level * downsample))
                self.read_region(xy_level0, level, (1, 1))


def _check_path(path: Path) -> None:
    if not path.exists():
        hint = "Check the path and its spelling."
        if any(char in str(path) for char in "*?["):
            hint = "No file matches this pattern; check it (histo-daen tile expands quoted globs itself)."
        raise SlideError(path, "does not exist", hint)
    if path.is_dir():
        raise SlideError(path, "is a folder, not a slide file", "Pass a slide file (.svs, .tiff, .ndpi, ...).")
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except PermissionError as err:
        raise SlideError(path, "cannot be read (permission denied)", "Fix the file's permissions.") from err
    except OSError as err:
        raise SlideError(path, f"cannot be read ({err.strerror})", "Check the file and the disk.") from err
    if not head:
        raise SlideError(path, "is an empty file", "Copy or export the slide again.")


def open_slide(
    path: str | os.PathLike[str],
    backend: BackendChoice = "auto",
    mpp_override: float | None = None,
    *,
    validate: bool = True,
) -> Slide:
    """Open a whole-slide image with OpenSlide or tiffslide and check it can be read.

    Args:
        path: the slide file (any name, including non-ASCII).
        backend: ``"openslide"``, ``"tiffslide"``, or ``"auto"``: OpenSlide, and tiffslide only for files OpenSlide
            cannot open (generic TIFF JPEG 2000/WebP, SubIFD pyramids, ...).
        mpp_override: level-0 microns per pixel to use instead of the file's (for files without a plausible one).
        validate: read the first and last pixels of every level now (see :meth:`Slide.validate`).

    Returns:
        An open :class:`Slide`; use it as a context manager (``with open_slide(p) as slide:``).

    Raises:
        SlideError: missing path, folder, empty or unreadable file, not a slide, truncated or corrupt.
        ValueError: ``mpp_override`` is not positive, or ``backend`` is unknown.
    """
    path = Path(path)
    if backend not in ("auto", "openslide", "tiffslide"):
        raise ValueError(f"backend must be 'auto', 'openslide' or 'tiffslide', got {backend!r}")
    if mpp_override is not None and not mpp_override > 0:
        raise ValueError(f"mpp_override must be positive, got {mpp_override}")
    _check_path(path)
    try:
        slide_backend, refusals = open_backend(path, backend)
    except BackendRefusedError as err:
        which = "OpenSlide or tiffslide" if backend == "auto" else library_label(backend)
        raise SlideError(
            path,
            f"is not a slide {which} can open ({err})",
            "Check that it is a whole-slide image and not truncated or corrupt"
            + ("; --backend auto tries both libraries." if backend != "auto" else "."),
        ) from None
    slide = Slide(path, slide_backend, mpp_override=mpp_override, refusals=tuple(refusals))
    if validate:
        try:
            slide.validate()
        except BaseException:
            slide.close()
            raise
    return slide
