"""OpenSlide and tiffslide behind one small interface, and the choice between them.

Both adapters return level-0 sizes as (width, height), reads as ``(h, w, 3) uint8`` RGB with transparent (or
out-of-slide) pixels composited on white, and microns per pixel as the file states it (plausibility is the
caller's business). Neither library's quirks leak out:

- OpenSlide returns un-premultiplied RGBA and transparent black outside the slide; its properties are strings.
- tiffslide returns RGB padded with black outside the slide; its properties are typed (``tiffslide.mpp-x`` is a
  float or None).

``openslide.open_slide`` is never used: its PIL fallback silently opens truncated slides.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import numpy as np

__all__ = [
    "BackendName",
    "BackendRefusedError",
    "OpenSlideBackend",
    "SlideBackend",
    "TiffSlideBackend",
    "backend_read_errors",
    "error_text",
    "library_label",
    "open_backend",
]

logger = logging.getLogger(__name__)

BackendName = Literal["openslide", "tiffslide"]


class SlideBackend(Protocol):
    """What :class:`histo_daen.slide.Slide` needs from a slide library."""

    name: BackendName
    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    properties: dict[str, Any]
    vendor: str | None

    def metadata_mpp(self) -> float | None:
        """Level-0 microns per pixel as the file states it (mean of x and y), or None."""
        ...

    def read_region(self, xy_level0: tuple[int, int], level: int, size_wh: tuple[int, int]) -> np.ndarray:
        """``(h, w, 3) uint8`` RGB of ``size_wh`` level pixels whose top-left is ``xy_level0`` (level-0 frame)."""
        ...

    def close(self) -> None: ...


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """``(h, w, 4) uint8`` un-premultiplied RGBA -> ``(h, w, 3) uint8`` RGB over white."""
    alpha = rgba[..., 3]
    if alpha.min() == 255:  # the usual case inside the slide: no arithmetic
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha[..., None].astype(np.uint16)
    rgb = (rgba[..., :3].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return rgb.astype(np.uint8)


def _mean_mpp(mpp_x: Any, mpp_y: Any) -> float | None:
    values = []
    for raw in (mpp_x, mpp_y):
        try:
            value = float(raw)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            values.append(value)
    if not values:
        return None
    if len(values) == 2 and abs(values[0] - values[1]) > 0.01 * max(values):
        logger.warning("non-square pixels: mpp-x %.4g, mpp-y %.4g; using their mean", values[0], values[1])
    return float(sum(values) / len(values))


class OpenSlideBackend:
    """An ``openslide.OpenSlide`` handle."""

    name: BackendName = "openslide"

    def __init__(self, path: Path) -> None:
        import openslide

        self._openslide = openslide
        # str(): OpenSlide takes a path; non-ASCII names pass as UTF-8 on POSIX.
        self._handle = openslide.OpenSlide(str(path))
        # tuple() types the library's (width, height) pairs as tuple[int, ...].
        self.dimensions = cast(tuple[int, int], tuple(self._handle.dimensions))
        self.level_dimensions = cast(
            tuple[tuple[int, int], ...], tuple(tuple(d) for d in self._handle.level_dimensions)
        )
        self.level_downsamples = tuple(float(d) for d in self._handle.level_downsamples)
        self.properties = dict(self._handle.properties)
        self.vendor = self.properties.get(openslide.PROPERTY_NAME_VENDOR)

    def metadata_mpp(self) -> float | None:
        return _mean_mpp(
            self.properties.get(self._openslide.PROPERTY_NAME_MPP_X),
            self.properties.get(self._openslide.PROPERTY_NAME_MPP_Y),
        )

    def read_region(self, xy_level0: tuple[int, int], level: int, size_wh: tuple[int, int]) -> np.ndarray:
        image = self._handle.read_region(xy_level0, level, size_wh)
        return _composite_on_white(np.asarray(image))

    def close(self) -> None:
        self._handle.close()


@contextlib.contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """Silence tifffile's log while it parses or decodes.

    tifffile logs every bad IFD offset of a damaged file ("invalid page offset"); the caller turns the failure into
    one clear error naming the file, so the library's lines would only be noise before it.
    """
    tifffile_logger = logging.getLogger("tifffile")
    previous_level = tifffile_logger.level
    tifffile_logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        tifffile_logger.setLevel(previous_level)


class TiffSlideBackend:
    """A ``tiffslide.TiffSlide`` handle. Opened per process: a handle shared across ``fork`` reads garbage."""

    name: BackendName = "tiffslide"

    def __init__(self, path: Path) -> None:
        import tiffslide

        self._tiffslide = tiffslide
        with _quiet_tifffile():
            self._handle = tiffslide.TiffSlide(path)
            # tuple() types the library's (width, height) pairs as tuple[int, ...].
            self.dimensions = cast(tuple[int, int], tuple(self._handle.dimensions))
            self.level_dimensions = cast(
                tuple[tuple[int, int], ...], tuple(tuple(d) for d in self._handle.level_dimensions)
            )
            self.level_downsamples = tuple(float(d) for d in self._handle.level_downsamples)
            self.properties = dict(self._handle.properties)
        vendor = self.properties.get(tiffslide.PROPERTY_NAME_VENDOR)
        self.vendor = None if vendor is None else str(vendor)

    def metadata_mpp(self) -> float | None:
        return _mean_mpp(
            self.properties.get(self._tiffslide.PROPERTY_NAME_MPP_X),
            self.properties.get(self._tiffslide.PROPERTY_NAME_MPP_Y),
        )

    def read_region(self, xy_level0: tuple[int, int], level: int, size_wh: tuple[int, int]) -> np.ndarray:
        width, height = size_wh
        level_width, level_height = self.level_dimensions[level]
        downsample = self.level_downsamples[level]
        # The level pixel OpenSlide starts from for this level-0 location (it divides and truncates the same way).
        x_level = math.floor(xy_level0[0] / downsample)
        y_level = math.floor(xy_level0[1] / downsample)
        inside = x_level >= 0 and y_level >= 0 and x_level + width <= level_width and y_level + height <= level_height
        with _quiet_tifffile():
            pixels = self._handle.read_region(xy_level0, level, size_wh, as_array=True)
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[..., None], 3, axis=2)
        if pixels.shape[2] == 4:
            pixels = _composite_on_white(pixels)
        pixels = np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)
        if not inside:
            # tiffslide pads outside the slide with black; the slide contract is white (as OpenSlide's transparent).
            rows = np.arange(y_level, y_level + height)
            cols = np.arange(x_level, x_level + width)
            outside = ((rows < 0) | (rows >= level_height))[:, None] | ((cols < 0) | (cols >= level_width))[None, :]
            pixels = pixels.copy()
            pixels[outside] = 255
        return pixels

    def close(self) -> None:
        self._handle.close()


def backend_read_errors() -> tuple[type[BaseException], ...]:
    """Exception types the slide libraries raise for unreadable files (codec, TIFF structure, I/O).

    imagecodecs' codec errors (``Jpeg8Error``, ...) and zarr's decode failures derive from ``RuntimeError``;
    tifffile raises ``ValueError`` for unknown compressions and ``KeyError``/``IndexError`` on malformed IFDs.
    """
    import openslide
    import tifffile

    return (
        openslide.OpenSlideError,
        tifffile.TiffFileError,
        OSError,
        ValueError,
        RuntimeError,
        KeyError,
        IndexError,
        EOFError,
    )


class BackendRefusedError(Exception):
    """Every library tried refused the file; ``reasons`` holds one ``"Library: message"`` per library."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__(reasons)
        self.reasons = reasons

    def __str__(self) -> str:
        return "; ".join(self.reasons)


def open_backend(path: Path, backend: Literal["auto", "openslide", "tiffslide"]) -> tuple[SlideBackend, list[str]]:
    """Open ``path`` with the requested library; ``"auto"`` tries OpenSlide first, then tiffslide.

    Returns:
        The open backend, and the ``"Library: message"`` reasons of libraries that refused it before (for errors).

    Raises:
        BackendRefusedError: the requested library (every library, for ``"auto"``) refused the file.
    """
    order: list[BackendName] = ["openslide", "tiffslide"] if backend == "auto" else [backend]
    reasons: list[str] = []
    for name in order:
        try:
            opened = OpenSlideBackend(path) if name == "openslide" else TiffSlideBackend(path)
            return opened, reasons
        except backend_read_errors() as err:
            reasons.append(f"{library_label(name)}: {error_text(err)}")
    raise BackendRefusedError(reasons)


def library_label(name: BackendName) -> str:
    """How people spell the library: ``"OpenSlide"`` or ``"tiffslide"``."""
    return {"openslide": "OpenSlide", "tiffslide": "tiffslide"}[name]


def error_text(err: BaseException) -> str:
    """The first line of a library's message (its type name when empty), without a trailing dot."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    return first.rstrip(".")
