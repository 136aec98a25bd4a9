"""Real pyramidal whole-slide files for tests, demos and benchmarks, with their ground truth beside them.

:func:`write_synthetic_slide` writes a tiled, pyramidal TIFF with tifffile that OpenSlide and tiffslide both read:

- ``kind="svs"``: Aperio style (level 0, a stripped thumbnail, then the reduced levels, all top-level pages; the
  ImageDescription starts with ``Aperio`` and carries ``AppMag`` and ``MPP``), so OpenSlide reports vendor
  ``aperio``;
- ``kind="tiff"``: generic pyramidal TIFF (reduced levels flagged ``subfiletype=1``) with resolution tags in
  pixels per centimetre.

The tissue is :mod:`histo_daen.data.synthetic_tissue` texture over a :class:`RegionLayout` of the four LUAD classes
inside tissue sections on white glass. Level 0 is rendered and streamed to the file band by band, and each lower
level is built by 2 x 2 averaging of the one above as the bands pass (held in memory for small slides, in a
memory-mapped scratch file beside the output for big ones), so a 20000 x 15000 slide needs a few hundred MB at
most. Beside ``slide.svs`` go ``slide.mask.png``, the ground truth as a palette PNG of slide-map values (0 glass,
1..4 = TE, NEC, LYM, TAS, as :attr:`histo_daen.classes.TissueClass.map_value`) at ``mask_downsample``, and
``slide.mask.json`` describing it. Adipose regions (``classes`` holding
:data:`~histo_daen.data.synthetic_tissue.ADIPOSE_INDEX`) are tissue and labelled TAS there.

What is not tissue is drawn on the pixels only: marker ink (on the glass margins, or strokes and circles of each
colour crossing the tissue), dust, an air bubble's edge; anthracotic pigment is drawn over tissue and is tissue.
When a slide has ink or a bubble, ``slide.marks.png`` (same grid as the mask) records where they hide what is under
them (:data:`MARK_INK`, :data:`MARK_BUBBLE`: at least half the mask pixel covered), and
:meth:`SyntheticSlide.tissue_truth` is the tissue a tissue detector should keep: tissue not hidden by them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile
from PIL import Image, ImageDraw
from scipy import ndimage

from histo_daen import __version__
from histo_daen.atomic import atomic_write, atomic_write_text, check_output
from histo_daen.classes import LUAD
from histo_daen.data.synthetic_tissue import (
    ADIPOSE_INDEX,
    GLASS_INDEX,
    RENDER_PIXEL_BYTES,
    TAS,
    RegionLayout,
    TissueAppearance,
    TissueStyle,
    render_tissue,
    smooth_noise,
)
from histo_daen.errors import ConfigError, PathError
from histo_daen.resources import require_disk, require_memory
from histo_daen.slide import open_slide

__all__ = [
    "INK_COLOURS",
    "MARK_BUBBLE",
    "MARK_INK",
    "InkColour",
    "SlideKind",
    "SyntheticSlide",
    "TissueLayout",
    "map_palette",
    "read_synthetic_slide",
    "truncated_copy",
    "write_synthetic_slide",
]

SlideKind = Literal["svs", "tiff"]
TissueLayout = Literal["sections", "disc", "full", "none"]
Compression = Literal["jpeg", "zlib"]
InkColour = Literal["blue", "green", "black", "red"]

# Marker ink as it looks on glass (what it lets through, 0-255); drawn at 75-90 % opacity.
INK_COLOURS: dict[str, tuple[int, int, int]] = {
    "blue": (35, 70, 175),
    "green": (30, 135, 65),
    "black": (25, 25, 30),
    "red": (195, 30, 45),
}
# Values of ``slide.marks.png``: 0 nothing, else what hides the tissue or glass under it.
MARK_INK = 1
MARK_BUBBLE = 2
_MARKS_SUPERSAMPLE = 4  # the marks raster is drawn this many times finer than the mask, then averaged

_FILE_TILE = 256  # TIFF tile side; also the height of the level-0 bands rendered at once
_RENDER_WIDTH = 2048  # level-0 columns rendered at once (bounds the renderer's scratch memory)
_IN_MEMORY_LEVELS_BYTES = 256 << 20  # lower levels bigger than this go to a memory-mapped scratch file
_LABEL_POINTS = 4_000_000  # ground-truth layout resolution: at most this many points, at least 1 um/px
_THUMBNAIL_SIDE = 1024
# File bytes per level-0 pixel, pyramid included (x 4/3), rounded up from H&E-like tissue: JPEG at quality 90 about
# 0.1 on the demo slide (mostly glass), lossless Deflate about half the raw 3 bytes.
_FILE_BYTES_PER_PIXEL = {"jpeg": 0.4, "zlib": 2.0, None: 4.0}
# Level-0 rows are halved into every lower level as they pass: the band, its float copies and the halvings.
_BAND_BYTES_PER_PIXEL = 16


@dataclass(frozen=True)
class SyntheticSlide:
    """What :func:`write_synthetic_slide` wrote.

    Attributes:
        path: the slide file.
        mask_path: ground truth, palette PNG of slide-map values (0 glass, 1..4 TE, NEC, LYM, TAS).
        mask_info_path: JSON beside it: downsample, class table, slide size.
        size_wh: level-0 (width, height) in pixels.
        mpp: true level-0 microns per pixel (also when the file does not say).
        levels: pyramid levels written.
        mask_downsample: level-0 pixels per mask pixel.
        kind: ``"svs"`` or ``"tiff"``.
        has_mpp_metadata: whether the file states its resolution.
        marks_path: ``slide.marks.png`` (where ink or a bubble edge hides the slide), None when there are none.
    """

    path: Path
    mask_path: Path
    mask_info_path: Path
    size_wh: tuple[int, int]
    mpp: float
    levels: int
    mask_downsample: int
    kind: SlideKind
    has_mpp_metadata: bool
    marks_path: Path | None = None

    def read_mask(self) -> np.ndarray:
        """The ground truth: (ceil(h / downsample), ceil(w / downsample)) uint8 map values."""
        with Image.open(self.mask_path) as image:
            return np.asarray(image)

    def read_marks(self) -> np.ndarray:
        """Where marks hide the slide, on the mask's grid: uint8, 0 nothing, :data:`MARK_INK`, :data:`MARK_BUBBLE`."""
        if self.marks_path is None:
            return np.zeros(self.read_mask().shape, dtype=np.uint8)
        with Image.open(self.marks_path) as image:
            return np.asarray(image)

    def tissue_truth(self) -> np.ndarray:
        """(h, w) bool on the mask's grid: tissue that is not hidden under ink or a bubble edge."""
        return (self.read_mask() > 0) & (self.read_marks() == 0)


def map_palette() -> list[int]:
    """768-entry PNG palette for slide-map values: 0 white (glass), then each class's colour at its map value."""
    flat = [0] * 768
    flat[0:3] = [255, 255, 255]
    for cls in LUAD.classes:
        flat[3 * cls.map_value : 3 * cls.map_value + 3] = cls.colour
    return flat


# -- layout --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SlideLayout:
    """Where the tissue is and which class each point is: a function of level-0 position."""

    width_um: float
    height_um: float
    tissue: TissueLayout
    regions: RegionLayout
    sections: tuple[tuple[float, float, float, float, float], ...]  # (cx, cy, rx, ry, angle), micrometres
    seed: int

    def labels_at(self, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
        """Dataset class index (4 = glass) at points in micrometres."""
        if self.tissue == "none":
            return np.full(np.shape(x_um), GLASS_INDEX, dtype=np.int64)
        x = np.asarray(x_um, dtype=np.float32)
        y = np.asarray(y_um, dtype=np.float32)
        # Ragged section borders: the ellipse radius wobbles by +-15 % over ~1/6 of the section.
        wobble = 0.3 * (smooth_noise(x, y, scale_um=max(60.0, self.width_um / 12.0), seed=self.seed) - 0.5)
        inside = np.zeros(x.shape, dtype=bool)
        if self.tissue == "full":  # everything but a ragged margin of about 4 % of the short side
            margin = 0.04 * min(self.width_um, self.height_um) * (1.0 + wobble * 3.0)
            inside = (x > margin) & (x < self.width_um - margin) & (y > margin) & (y < self.height_um - margin)
        for cx, cy, rx, ry, angle in self.sections:
            cos, sin = math.cos(angle), math.sin(angle)
            u = ((x - cx) * cos + (y - cy) * sin) / rx
            v = ((y - cy) * cos - (x - cx) * sin) / ry
            inside |= np.sqrt(u * u + v * v) < 1.0 + wobble
        labels = np.full(x.shape, GLASS_INDEX, dtype=np.int64)
        if inside.any():
            labels[inside] = self.regions.labels_at(x[inside], y[inside])
        return labels


def _make_layout(
    size_wh: tuple[int, int],
    mpp: float,
    tissue: TissueLayout,
    classes: tuple[int, ...],
    mean_region_um: float,
    rng: np.random.Generator,
) -> _SlideLayout:
    width_um, height_um = size_wh[0] * mpp, size_wh[1] * mpp
    regions = RegionLayout(seed=int(rng.integers(0, 2**32)), classes=classes, mean_region_um=mean_region_um)
    sections: list[tuple[float, float, float, float, float]] = []
    if tissue == "disc":
        radius = 0.3 * min(width_um, height_um)
        sections.append((width_um / 2, height_um / 2, radius, radius, 0.0))
    elif tissue == "sections":
        # Two or three pieces inside the central 84 % x 80 % of the glass; the margins keep pen marks off tissue.
        count = int(rng.integers(2, 4))
        for index in range(count):
            cx = width_um * (0.08 + 0.84 * (index + 0.5) / count)
            cy = height_um * rng.uniform(0.45, 0.55)
            # Radii leave room for the +15 % border wobble inside each piece's share of the glass.
            rx = 0.84 * width_um / count / 2 * rng.uniform(0.7, 0.85)
            ry = min(cy - 0.1 * height_um, 0.9 * height_um - cy) * rng.uniform(0.7, 0.85)
            sections.append((cx, cy, rx, ry, float(rng.uniform(-0.3, 0.3))))
    return _SlideLayout(width_um, height_um, tissue, regions, tuple(sections), int(rng.integers(0, 2**32)))


class _LabelRaster:
    """The layout sampled once on a coarse grid; level-0 labels are looked up from it (nearest neighbour)."""

    def __init__(self, layout: _SlideLayout, size_wh: tuple[int, int], mpp: float) -> None:
        area_um2 = layout.width_um * layout.height_um
        self.step_um = max(1.0, mpp, math.sqrt(area_um2 / _LABEL_POINTS))
        columns = math.ceil(layout.width_um / self.step_um)
        rows = math.ceil(layout.height_um / self.step_um)
        xs = ((np.arange(columns) + 0.5) * self.step_um).astype(np.float32)
        self.raster = np.empty((rows, columns), dtype=np.uint8)
        for top in range(0, rows, 256):  # bands keep the layout's scratch arrays small
            ys = ((np.arange(top, min(rows, top + 256)) + 0.5) * self.step_um).astype(np.float32)
            grid_x, grid_y = np.meshgrid(xs, ys)
            self.raster[top : top + ys.size] = layout.labels_at(grid_x, grid_y)
        self.mpp = mpp

    def labels(self, rows_level0: np.ndarray, cols_level0: np.ndarray) -> np.ndarray:
        """(len(rows), len(cols)) int64 dataset indices at level-0 pixel centres."""
        scale = self.mpp / self.step_um
        r = np.minimum(((rows_level0 + 0.5) * scale).astype(np.int64), self.raster.shape[0] - 1)
        c = np.minimum(((cols_level0 + 0.5) * scale).astype(np.int64), self.raster.shape[1] - 1)
        return self.raster[np.ix_(r, c)].astype(np.int64)


# -- marks on the glass -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mark:
    """A stroke, speck or granule cluster in level-0 pixels, drawn with PIL so every band draws the same pixels.

    ``points`` is the polyline of a stroke (``width`` pixels wide), the bounding box of a dot (``is_dot``), or the
    centres of granules whose radii are ``radii`` (all drawn as one layer: overlapping granules do not darken).
    ``hides`` is the ``slide.marks.png`` value where the mark covers the slide (0: it hides nothing worth noting).
    """

    points: tuple[tuple[float, float], ...]
    width: int
    colour: tuple[int, int, int]
    opacity: float
    is_dot: bool = False
    radii: tuple[float, ...] = ()
    hides: int = 0

    def reach(self) -> float:
        """How far the drawing extends beyond ``points``, in pixels."""
        return max(self.radii) if self.radii else float(self.width)

    def draw(self, draw: ImageDraw.ImageDraw, shift_x: float, shift_y: float, scale: float = 1.0) -> None:
        """Draw the mark's coverage (fill 255) with level-0 point ``(x, y)`` at ``((x - shift_x) * scale, ...)``."""
        shifted = [((x - shift_x) * scale, (y - shift_y) * scale) for x, y in self.points]
        if self.radii:
            for (x, y), radius in zip(shifted, self.radii, strict=True):
                r = radius * scale
                draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
        elif self.is_dot:
            draw.ellipse(shifted, fill=255)
        else:
            draw.line(shifted, fill=255, width=max(1, round(self.width * scale)), joint="curve")


def _pen_marks(size_wh: tuple[int, int], rng: np.random.Generator) -> list[_Mark]:
    """Marker ink on the glass margins: a blue arc, a green tick, a black line (what pathologists draw)."""
    width, height = size_wh
    stroke = max(6, round(0.012 * min(width, height)))
    marks = []
    # A blue arc in the left margin (tissue sections keep off the outer 8 %).
    angles = np.linspace(-1.0, 1.0, 24)
    cx, cy, radius = -0.4 * width, 0.5 * height, 0.44 * width
    arc = tuple((cx + radius * math.cos(a), cy + radius * math.sin(a) * 1.2) for a in angles)
    marks.append(_Mark(arc, stroke, (35, 70, 175), 0.9, hides=MARK_INK))
    # A green tick near the top right corner.
    x0, y0 = 0.85 * width, 0.02 * height
    tick = ((x0, y0 + 0.02 * height), (x0 + 0.02 * width, y0 + 0.05 * height), (x0 + 0.08 * width, y0))
    marks.append(_Mark(tick, stroke, (30, 135, 65), 0.9, hides=MARK_INK))
    # A black line along the bottom edge.
    y = 0.955 * height + rng.uniform(-0.01, 0.01) * height
    line = ((0.2 * width, y), (0.7 * width, y - 0.01 * height))
    marks.append(_Mark(line, stroke, (25, 25, 30), 0.95, hides=MARK_INK))
    return marks


def _dust(size_wh: tuple[int, int], mpp: float, rng: np.random.Generator) -> list[_Mark]:
    """Grey specks 5-25 um across, scattered over the slide (dust on the coverslip)."""
    width, height = size_wh
    count = max(10, round(width * height * mpp * mpp / 250_000.0))  # about 4 per mm^2
    marks = []
    for _ in range(count):
        radius = float(rng.uniform(2.5, 12.5)) / mpp
        x, y = float(rng.uniform(0, width)), float(rng.uniform(0, height))
        grey = int(rng.integers(70, 150))
        marks.append(_Mark(((x - radius, y - radius), (x + radius, y + radius)), 0, (grey, grey, grey), 0.9, True))
    return marks


def _section_frames(layout: _SlideLayout) -> list[tuple[float, float, float, float, float]]:
    """(cx, cy, rx, ry, angle) in micrometres of each tissue piece; the central part of a ``full`` layout."""
    if layout.sections:
        return list(layout.sections)
    radius = 0.3 * min(layout.width_um, layout.height_um)
    return [(layout.width_um / 2, layout.height_um / 2, radius, radius, 0.0)]


def _ellipse_points(
    frame: tuple[float, float, float, float, float], scale: float, mpp: float, start: float = 0.0, turn: float = 1.0
) -> tuple[tuple[float, float], ...]:
    """Level-0 points along ``scale`` times a section's outline, from ``start`` over ``turn`` full turns."""
    cx, cy, rx, ry, angle = frame
    cos, sin = math.cos(angle), math.sin(angle)
    points = []
    for t in np.linspace(start, start + 2 * math.pi * turn, max(8, round(96 * turn))):
        u, v = scale * rx * math.cos(t), scale * ry * math.sin(t)
        points.append(((cx + u * cos - v * sin) / mpp, (cy + u * sin + v * cos) / mpp))
    return tuple(points)


def _ink_stroke(
    points: tuple[tuple[float, float], ...], mpp: float, colour: tuple[int, int, int], rng: np.random.Generator
) -> _Mark:
    """A marker line through ``points``: 60-120 um wide, 75-90 % opaque."""
    width = round(float(rng.uniform(60, 120)) / mpp)
    return _Mark(points, width, colour, float(rng.uniform(0.75, 0.9)), hides=MARK_INK)


def _ink_marks(
    layout: _SlideLayout, mpp: float, colours: tuple[InkColour, ...], rng: np.random.Generator
) -> list[_Mark]:
    """Per colour, a circle around part of a tissue piece and a stroke from the glass into it, 60-120 um wide."""
    frames = _section_frames(layout)
    marks = []
    for index, name in enumerate(colours):
        if name not in INK_COLOURS:
            raise ConfigError(f"unknown ink colour {name!r}; choose from {', '.join(INK_COLOURS)}")
        colour = INK_COLOURS[name]
        frame = frames[index % len(frames)]
        cx, cy, rx, ry, _ = frame
        # The circle: most of a turn at 0.7-1.1 of the piece's size, so it runs over tissue and glass.
        circle = _ellipse_points(
            frame, float(rng.uniform(0.7, 1.1)), mpp, start=float(rng.uniform(0, 2 * math.pi)), turn=0.85
        )
        marks.append(_ink_stroke(circle, mpp, colour, rng))
        # The stroke: from the glass 1.4 radii out to a third of the way in, bending a little.
        direction = float(rng.uniform(0, 2 * math.pi))
        outer, inner = 1.4 * max(rx, ry), 0.3 * min(rx, ry)
        bend = float(rng.uniform(-0.15, 0.15))
        stroke = tuple(
            (
                (cx + r * math.cos(direction + bend * k)) / mpp,
                (cy + r * math.sin(direction + bend * k)) / mpp,
            )
            for k, r in enumerate(np.linspace(outer, inner, 6))
        )
        marks.append(_ink_stroke(stroke, mpp, colour, rng))
    return marks


def _bubble(layout: _SlideLayout, mpp: float, rng: np.random.Generator) -> list[_Mark]:
    """The edge of an air bubble under the coverslip: a dark grey ring 12-20 um wide with a paler halo inside it,
    centred on the border of a tissue piece so that it runs over tissue and glass."""
    cx, cy, rx, ry, angle = _section_frames(layout)[0]
    where = float(rng.uniform(0, 2 * math.pi))
    centre_x = cx + rx * math.cos(where) * math.cos(angle) - ry * math.sin(where) * math.sin(angle)
    centre_y = cy + rx * math.cos(where) * math.sin(angle) + ry * math.sin(where) * math.cos(angle)
    radius = float(rng.uniform(0.6, 1.0)) * min(rx, ry)
    ring_um = float(rng.uniform(12, 20))
    frame = (centre_x, centre_y, radius, radius, 0.0)
    edge = _Mark(_ellipse_points(frame, 1.0, mpp), round(ring_um / mpp), (70, 70, 75), 0.8, hides=MARK_BUBBLE)
    halo_frame = (centre_x, centre_y, radius - 1.5 * ring_um, radius - 1.5 * ring_um, 0.0)
    halo = _Mark(_ellipse_points(halo_frame, 1.0, mpp), round(0.6 * ring_um / mpp), (160, 160, 165), 0.4)
    return [edge, halo]


def _pigment(labels: _LabelRaster, mpp: float, rng: np.random.Generator) -> list[_Mark]:
    """Anthracotic (carbon) pigment in the tissue: clusters 40-200 um across and scattered specks of black granules.

    Cluster centres keep their radius away from the glass, so every cluster is surrounded by tissue.
    """
    # Every 4th layout point is plenty to place clusters (a few um apart) and cheap to measure distances on.
    step_um = 4 * labels.step_um
    tissue = labels.raster[::4, ::4] != GLASS_INDEX
    if not tissue.any():
        return []
    inside_um = ndimage.distance_transform_edt(tissue) * step_um
    tissue_rows, tissue_cols = np.nonzero(tissue)
    tissue_mm2 = tissue_rows.size * (step_um / 1000.0) ** 2
    n_clusters, n_specks = max(3, round(6 * tissue_mm2)), max(10, round(30 * tissue_mm2))
    marks = []
    colour = (30, 26, 22)
    for number in range(n_clusters + n_specks):
        is_cluster = number < n_clusters
        radius_um = float(rng.uniform(20, 100)) if is_cluster else float(rng.uniform(3, 8))
        # A tissue point deep enough inside (rejection sampling: a few tries, or a smaller cluster).
        for _ in range(200):
            pick = int(rng.integers(tissue_rows.size))
            row, col = tissue_rows[pick], tissue_cols[pick]
            if inside_um[row, col] > radius_um + 10.0:
                break
        else:
            continue
        centre = ((col + 0.5) * step_um / mpp, (row + 0.5) * step_um / mpp)
        # Granules 0.8-3 um in radius covering about 40 % of an irregular cluster: a few sub-clusters of
        # macrophages, each a Gaussian cloud.
        n_sub = int(rng.integers(2, 6)) if is_cluster else 1
        granule_count = max(3, round(0.4 * math.pi * radius_um**2 / (math.pi * 2.0**2)))
        points, radii = [], []
        for _ in range(n_sub):
            offset = rng.normal(0.0, 0.35 * radius_um, 2) / mpp
            spread = float(rng.uniform(0.3, 0.5)) * radius_um / mpp
            xy = rng.normal(0.0, spread, (granule_count // n_sub, 2)) + offset
            points += [(centre[0] + float(x), centre[1] + float(y)) for x, y in xy]
            radii += [float(r) / mpp for r in rng.uniform(0.8, 3.0, len(xy))]
        marks.append(_Mark(tuple(points), 0, colour, 0.92, radii=tuple(radii)))
    return marks


def _draw_marks(band: np.ndarray, top: int, left: int, marks: list[_Mark]) -> None:
    """Blend ``marks`` into an (h, w, 3) uint8 band whose top-left pixel is (left, top) at level 0, in place."""
    height, width = band.shape[:2]
    for mark in marks:
        xs = [p[0] for p in mark.points]
        ys = [p[1] for p in mark.points]
        reach = mark.reach()
        # The part of the band the mark can touch (whole pixels, so the drawing is only shifted, never resampled).
        x0 = max(0, math.floor(min(xs) - reach) - 2 - left)
        x1 = min(width, math.ceil(max(xs) + reach) + 2 - left)
        y0 = max(0, math.floor(min(ys) - reach) - 2 - top)
        y1 = min(height, math.ceil(max(ys) + reach) + 2 - top)
        if x0 >= x1 or y0 >= y1:
            continue
        coverage = Image.new("L", (x1 - x0, y1 - y0), 0)
        mark.draw(ImageDraw.Draw(coverage), left + x0, top + y0)
        alpha = np.asarray(coverage, dtype=np.float32)[..., None] * np.float32(mark.opacity / 255.0)
        if not alpha.any():
            continue
        # Ink absorbs: multiply the background by the ink's transmission.
        ink = np.asarray(mark.colour, dtype=np.float32) / 255.0
        window = band[y0:y1, x0:x1]
        blended = window.astype(np.float32) * (1.0 - alpha + alpha * ink)
        window[...] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def _marks_raster(marks: list[_Mark], size_wh: tuple[int, int], downsample: int) -> np.ndarray | None:
    """What hides the slide on the mask's grid: per mask pixel, the ``hides`` value of marks covering at least half
    of it (a bubble edge over ink counts as ink), or None when no mark hides anything."""
    hiding = [mark for mark in marks if mark.hides]
    if not hiding:
        return None
    width, height = size_wh
    shape_hw = (math.ceil(height / downsample), math.ceil(width / downsample))
    fine = _MARKS_SUPERSAMPLE
    raster = np.zeros(shape_hw, dtype=np.uint8)
    for value in sorted({mark.hides for mark in hiding}, reverse=True):  # lower values (ink) drawn last, on top
        coverage = Image.new("L", (shape_hw[1] * fine, shape_hw[0] * fine), 0)
        draw = ImageDraw.Draw(coverage)
        for mark in hiding:
            if mark.hides == value:
                mark.draw(draw, 0.0, 0.0, fine / downsample)
        pixels = np.asarray(coverage, dtype=np.float32).reshape(shape_hw[0], fine, shape_hw[1], fine)
        raster[pixels.mean(axis=(1, 3)) >= 127.5] = value
    return raster


# -- pyramid -----------------------------------------------------------------------------------------------------


def _halve(pixels: np.ndarray) -> np.ndarray:
    """2 x 2 mean (rounded) of an (h, w, 3) uint8 image; an odd last row or column is dropped."""
    height, width = pixels.shape[0] // 2 * 2, pixels.shape[1] // 2 * 2
    quads = pixels[:height, :width].astype(np.uint16)
    summed = quads[0::2, 0::2] + quads[1::2, 0::2] + quads[0::2, 1::2] + quads[1::2, 1::2]
    return ((summed + 2) // 4).astype(np.uint8)


def _level_sizes(size_wh: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    sizes = [size_wh]
    for _ in range(1, levels):
        width, height = sizes[-1]
        sizes.append((width // 2, height // 2))
    return sizes


def _tiles_of_band(band: np.ndarray) -> Iterator[np.ndarray]:
    """Split an (h <= 256, w, 3) band into 256 x 256 tiles, left to right, padding the edges with white."""
    height, width = band.shape[:2]
    for left in range(0, width, _FILE_TILE):
        tile = band[:, left : left + _FILE_TILE]
        if tile.shape[:2] != (_FILE_TILE, _FILE_TILE):
            padded = np.full((_FILE_TILE, _FILE_TILE, 3), 255, dtype=np.uint8)
            padded[:height, : tile.shape[1]] = tile
            tile = padded
        yield tile


# -- the writer ---------------------------------------------------------------------------------------------------


def write_synthetic_slide(
    path: str | os.PathLike[str],
    *,
    size_wh: tuple[int, int] = (2048, 1536),
    mpp: float = 0.5,
    levels: int = 3,
    kind: SlideKind = "svs",
    compression: Compression | None = "jpeg",
    jpeg_quality: int = 90,
    tissue: TissueLayout = "sections",
    classes: tuple[int, ...] = (0, 1, 2, 3),
    mean_region_um: float = 300.0,
    seed: int = 0,
    write_mpp: bool = True,
    pen_marks: bool = False,
    dust: bool = False,
    mask_downsample: int = 16,
    style: TissueStyle | None = None,
    stain_scale: tuple[float, float] = (1.0, 1.0),
    pigment: bool = False,
    ink: tuple[InkColour, ...] = (),
    bubble: bool = False,
    overwrite: bool = True,
) -> SyntheticSlide:
    """Write a synthetic H&E whole-slide image and its ground truth.

    Args:
        path: the slide file to write (``.svs`` or ``.tif``/``.tiff``); its folder is created.
        size_wh: level-0 (width, height) in pixels; odd sizes give odd downsamples (2.0013), on purpose.
        mpp: level-0 microns per pixel (0.25 is a 40x scan, 0.5 a 20x one).
        levels: pyramid levels, each half the size of the previous one.
        kind: ``"svs"`` (Aperio header, vendor ``aperio``) or ``"tiff"`` (generic, resolution tags).
        compression: ``"jpeg"`` (lossy, small), ``"zlib"`` (lossless Deflate) or None.
        jpeg_quality: JPEG quality, 1-100.
        tissue: ``"sections"`` (2-3 ragged pieces), ``"disc"`` (one disc, 0.3 x the short side in radius, centred),
            ``"full"`` (tissue everywhere but a thin margin, like a resection specimen), ``"none"`` (blank glass).
        classes: dataset class indices the tissue regions are drawn from (repeat one to make it more frequent);
            :data:`~histo_daen.data.synthetic_tissue.ADIPOSE_INDEX` adds fat, labelled TAS in the ground truth.
        mean_region_um: typical diameter of one class region, micrometres.
        seed: everything random derives from it: the same seed writes the same pixels.
        write_mpp: False writes no resolution at all (no Aperio ``MPP``, no TIFF resolution tags).
        pen_marks: draw blue, green and black marker ink on the glass margins.
        dust: scatter grey specks.
        mask_downsample: level-0 pixels per ground-truth mask pixel.
        style: the tissue renderer's knobs.
        stain_scale: multipliers of the drawn haematoxylin and eosin amounts: (3.5, 1.0) is a darkly stained slide
            whose lymphocyte sheets are dark violet even at thumbnail scale, (0.4, 0.4) a faded, pale one.
        pigment: draw anthracotic (carbon) pigment in the tissue: black clusters 40-200 um across and specks.
        ink: marker colours (``"blue"``, ``"green"``, ``"black"``, ``"red"``); each draws a circle around part
            of a tissue piece and a stroke from the glass into it, 60-120 um wide.
        bubble: draw the edge of an air bubble across the border of a tissue piece.
        overwrite: replace an existing file at ``path`` (False: refuse it).

    Returns:
        The paths and geometry written.

    Raises:
        ConfigError: invalid geometry or mpp; more memory or disk than this machine has (with the estimate).
        PathError, OutputExistsError: ``path`` cannot be written, or exists and ``overwrite`` is False.
    """
    path = Path(path)
    width, height = (int(size_wh[0]), int(size_wh[1]))
    if width < 1 or height < 1 or levels < 1 or mask_downsample < 1:
        raise ConfigError(
            f"invalid slide geometry: size_wh={size_wh}, levels={levels}, mask_downsample={mask_downsample}"
        )
    if not (math.isfinite(mpp) and 0.01 <= mpp <= 1000):
        raise ConfigError(f"mpp must be a finite number of microns per pixel in [0.01, 1000], got {mpp}")
    if min(width, height) >> (levels - 1) < 1:
        raise ConfigError(f"{levels} levels do not fit a {width}x{height} slide")
    if kind not in ("svs", "tiff"):
        raise ValueError(f"kind must be 'svs' or 'tiff', got {kind!r}")
    if not set(classes) <= {0, 1, 2, 3, GLASS_INDEX, ADIPOSE_INDEX}:
        raise ConfigError(f"classes must be dataset indices 0-3, {GLASS_INDEX} (glass) or {ADIPOSE_INDEX} (fat)")
    if not all(math.isfinite(scale) and scale >= 0 for scale in stain_scale):
        raise ConfigError(f"stain_scale must be finite and non-negative, got {stain_scale}")
    check_output(path, kind="file", overwrite=overwrite)
    _check_resources(path, (width, height), compression)
    rng = np.random.default_rng(seed)
    style = style or TissueStyle()
    appearance = TissueAppearance.draw(rng, style)
    if tuple(stain_scale) != (1.0, 1.0):
        appearance = dataclasses.replace(
            appearance,
            haematoxylin_amount=appearance.haematoxylin_amount * stain_scale[0],
            eosin_amount=appearance.eosin_amount * stain_scale[1],
        )
    layout = _make_layout((width, height), mpp, tissue, tuple(classes), mean_region_um, rng)
    labels = _LabelRaster(layout, (width, height), mpp)
    marks = (_pen_marks((width, height), rng) if pen_marks else []) + (_dust((width, height), mpp, rng) if dust else [])
    # Pigment first: ink and bubble edges lie on the coverslip, above the tissue.
    marks = (_pigment(labels, mpp, rng) if pigment else []) + marks
    marks += _ink_marks(layout, mpp, tuple(ink), rng) if ink else []
    marks += _bubble(layout, mpp, rng) if bubble else []
    sizes = _level_sizes((width, height), levels)
    margin = max(2, math.ceil(2.5 * style.blur_um / mpp) + 1)  # rows/columns rendered beyond a band for the blur

    path.parent.mkdir(parents=True, exist_ok=True)  # check_output proved it can be
    lower_bytes = sum(w * h * 3 for w, h in sizes[1:])
    with contextlib.ExitStack() as stack:
        scratch = None
        if lower_bytes > _IN_MEMORY_LEVELS_BYTES:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".synthetic-", dir=path.parent)))
        lower = [_allocate_level(size, scratch, index) for index, size in enumerate(sizes[1:], start=1)]

        def level0_tiles() -> Iterator[np.ndarray]:
            for band_index, top in enumerate(range(0, height, _FILE_TILE)):
                band = _render_band(
                    top, min(height, top + _FILE_TILE), width, mpp, labels, appearance, style, margin, seed, band_index
                )
                _draw_marks(band, top, 0, marks)
                _reduce_into(band, top, lower)
                yield from _tiles_of_band(band)

        tmp = stack.enter_context(atomic_write(path))
        _write_tiff(tmp, level0_tiles(), sizes, lower, kind, compression, jpeg_quality, mpp, write_mpp)
    mask_path, info_path = _write_ground_truth(path, labels, (width, height), mpp, mask_downsample, seed)
    marks_path = _write_marks(path, marks, (width, height), mask_downsample)
    return SyntheticSlide(
        path=path,
        mask_path=mask_path,
        mask_info_path=info_path,
        size_wh=(width, height),
        mpp=float(mpp),
        levels=levels,
        mask_downsample=mask_downsample,
        kind=kind,
        has_mpp_metadata=write_mpp,
        marks_path=marks_path,
    )


def _check_resources(path: Path, size_wh: tuple[int, int], compression: Compression | None) -> None:
    """Refuse, with the estimates, a slide whose bands do not fit in memory or whose file does not fit on disk."""
    width, height = size_wh
    band_bytes = _FILE_TILE * width * _BAND_BYTES_PER_PIXEL + (_FILE_TILE + 64) * _RENDER_WIDTH * RENDER_PIXEL_BYTES
    size = f"a {width}x{height} synthetic slide"
    require_memory(band_bytes, what=f"{size} (one band of {_FILE_TILE} rows)", hint="Choose a smaller --size.")
    lower_bytes = width * height * 3 / 3  # the lower levels add up to a third of level 0
    scratch_bytes = lower_bytes if lower_bytes > _IN_MEMORY_LEVELS_BYTES else 0
    require_disk(
        width * height * _FILE_BYTES_PER_PIXEL.get(compression, 4.0) + scratch_bytes,
        path.parent,
        what=f"{size} ({compression or 'uncompressed'} tiles, pyramid and scratch space)",
        hint="Choose a smaller --size or another place.",
    )


def _allocate_level(size_wh: tuple[int, int], scratch: Path | None, index: int) -> np.ndarray:
    shape = (size_wh[1], size_wh[0], 3)
    if scratch is None:
        return np.empty(shape, dtype=np.uint8)
    return np.lib.format.open_memmap(scratch / f"level{index}.npy", mode="w+", dtype=np.uint8, shape=shape)


def _render_band(
    top: int,
    bottom: int,
    width: int,
    mpp: float,
    labels: _LabelRaster,
    appearance: TissueAppearance,
    style: TissueStyle,
    margin: int,
    seed: int,
    band_index: int,
) -> np.ndarray:
    """Level-0 rows ``top:bottom``, rendered in column chunks with a margin so the blur has no seams."""
    band = np.empty((bottom - top, width, 3), dtype=np.uint8)
    for chunk_index, left in enumerate(range(0, width, _RENDER_WIDTH)):
        right = min(width, left + _RENDER_WIDTH)
        rows = np.arange(top - margin, bottom + margin)
        cols = np.arange(left - margin, right + margin)
        label_map = labels.labels(np.clip(rows, 0, None), np.clip(cols, 0, None))
        chunk_rng = np.random.default_rng([seed, band_index, chunk_index])
        if (label_map == GLASS_INDEX).all():
            # Blank glass needs no renderer: the same illumination and noise, far cheaper.
            pixels = _glass(label_map.shape, appearance, style, chunk_rng)
        else:
            origin = ((left - margin) * mpp, (top - margin) * mpp)
            pixels = render_tissue(
                label_map, mpp=mpp, rng=chunk_rng, style=style, appearance=appearance, origin_um=origin
            )
        band[:, left:right] = pixels[margin : margin + bottom - top, margin : margin + right - left]
    return band


def _glass(
    shape_hw: tuple[int, int], appearance: TissueAppearance, style: TissueStyle, rng: np.random.Generator
) -> np.ndarray:
    noise = np.frombuffer(rng.bytes(shape_hw[0] * shape_hw[1] * 3), dtype=np.uint8).reshape(*shape_hw, 3)
    amplitude = style.noise * math.sqrt(12.0) / 256.0
    values = appearance.illumination + (noise.astype(np.float32) - 127.5) * np.float32(amplitude)
    return np.clip(values + 0.5, 0, 255).astype(np.uint8)


def _reduce_into(band: np.ndarray, top: int, lower: list[np.ndarray]) -> None:
    """Add this level-0 band's share of every lower level (bands are 256 rows, so every level divides evenly)."""
    current = band
    row = top
    for level in lower:
        current = _halve(current)
        row //= 2
        rows = min(current.shape[0], level.shape[0] - row)
        if rows <= 0:
            return
        level[row : row + rows] = current[:rows, : level.shape[1]]


def _aperio_description(
    size_wh: tuple[int, int], mpp: float, write_mpp: bool, compression: Compression | None, quality: int
) -> str:
    codec = {"jpeg": f"JPEG/RGB Q={quality}", "zlib": "Deflate/RGB", None: "RAW/RGB"}[compression]
    fields = [f"AppMag = {max(1, round(10.0 / mpp))}"]
    if write_mpp:
        fields.append(f"MPP = {mpp:.6g}")
    width, height = size_wh
    header = f"Aperio Image Library v12.0.0 histo-daen synthetic\r\n{width}x{height} [0,0 {width}x{height}] (256x256)"
    return f"{header} {codec}|" + "|".join(fields)


def _write_tiff(
    path: Path,
    level0_tiles: Iterator[np.ndarray],
    sizes: list[tuple[int, int]],
    lower: list[np.ndarray],
    kind: SlideKind,
    compression: Compression | None,
    quality: int,
    mpp: float,
    write_mpp: bool,
) -> None:
    codec: dict[str, Any] = {"compression": compression}
    if compression == "jpeg":
        codec["compressionargs"] = {"level": quality}
    width, height = sizes[0]
    common: dict[str, Any] = {"photometric": "rgb", "metadata": None, **codec}
    with tifffile.TiffWriter(path, bigtiff=width * height * 3 > 3_500_000_000) as tif:
        if kind == "svs":
            description = _aperio_description(sizes[0], mpp, write_mpp, compression, quality)
            tif.write(
                level0_tiles,
                shape=(height, width, 3),
                dtype=np.uint8,
                tile=(_FILE_TILE, _FILE_TILE),
                description=description,
                **common,
            )
            # IFD 1 is the thumbnail in Aperio files (tiffslide always takes it as one): stripped, not tiled.
            tif.write(_thumbnail(lower, sizes), description=description, **common)
            for level in lower:
                tif.write(level, tile=(_FILE_TILE, _FILE_TILE), subfiletype=0, description=description, **common)
        else:
            resolution: dict[str, Any] = {}
            if write_mpp:
                resolution = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
            tif.write(
                level0_tiles,
                shape=(height, width, 3),
                dtype=np.uint8,
                tile=(_FILE_TILE, _FILE_TILE),
                **resolution,
                **common,
            )
            for index, level in enumerate(lower, start=1):
                if write_mpp:
                    level_mpp = mpp * sizes[0][0] / sizes[index][0]
                    resolution = {"resolution": (1e4 / level_mpp, 1e4 / level_mpp), "resolutionunit": "CENTIMETER"}
                tif.write(level, tile=(_FILE_TILE, _FILE_TILE), subfiletype=1, **resolution, **common)


def _thumbnail(lower: list[np.ndarray], sizes: list[tuple[int, int]]) -> np.ndarray:
    """The Aperio thumbnail page: the smallest level, shrunk to at most 1024 px a side."""
    source = lower[-1] if lower else None
    if source is None:  # a single-level slide: its thumbnail comes from a tiny white placeholder
        return np.full((min(sizes[0][1], 64), min(sizes[0][0], 64), 3), 255, dtype=np.uint8)
    height, width = source.shape[:2]
    scale = min(1.0, _THUMBNAIL_SIDE / max(width, height))
    if scale == 1.0:
        return np.array(source)
    image = Image.fromarray(np.asarray(source)).resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BOX
    )
    return np.asarray(image)


def _write_ground_truth(
    path: Path, labels: _LabelRaster, size_wh: tuple[int, int], mpp: float, downsample: int, seed: int
) -> tuple[Path, Path]:
    width, height = size_wh
    rows = (np.arange(math.ceil(height / downsample)) + 0.5) * downsample - 0.5
    cols = (np.arange(math.ceil(width / downsample)) + 0.5) * downsample - 0.5
    indices = labels.labels(np.clip(rows, 0, height - 1), np.clip(cols, 0, width - 1))
    indices[indices == ADIPOSE_INDEX] = TAS  # fat lies in stroma; it is no LUAD class of its own
    map_values = np.where(indices == GLASS_INDEX, 0, indices + 1).astype(np.uint8)
    image = Image.fromarray(map_values, mode="P")
    image.putpalette(map_palette())  # without a full palette Pillow re-packs the indices on save
    mask_path = path.with_name(path.stem + ".mask.png")
    with atomic_write(mask_path) as tmp:
        image.save(tmp, format="PNG", optimize=False)
    info = {
        "generator": "histo_daen.data.synthetic_slide",
        "histo_daen_version": __version__,
        "slide": path.name,
        "mask": mask_path.name,
        "level0_size_wh": [width, height],
        "mpp": mpp,
        "downsample": downsample,
        "mask_shape_hw": list(map_values.shape),
        "values": {"0": "glass"} | {str(c.map_value): c.code for c in LUAD.classes},
        "seed": seed,
    }
    info_path = path.with_name(path.stem + ".mask.json")
    atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")
    return mask_path, info_path


def _write_marks(path: Path, marks: list[_Mark], size_wh: tuple[int, int], downsample: int) -> Path | None:
    """``slide.marks.png`` beside the slide when marks hide part of it (an older one is removed when none do)."""
    marks_path = path.with_name(path.stem + ".marks.png")
    raster = _marks_raster(marks, size_wh, downsample)
    if raster is None:
        marks_path.unlink(missing_ok=True)
        return None
    with atomic_write(marks_path) as tmp:
        Image.fromarray(raster).save(tmp, format="PNG", optimize=False)
    return marks_path


def read_synthetic_slide(path: str | os.PathLike[str]) -> SyntheticSlide:
    """A synthetic slide written earlier, with its ground truth: what :func:`write_synthetic_slide` returned.

    Raises:
        PathError: the ground truth (``<stem>.mask.json`` / ``.mask.png``) is missing or unreadable.
        SlideError: the slide itself cannot be opened (e.g. a write that was killed).
    """
    source = Path(path)
    info_path = source.with_name(source.stem + ".mask.json")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        mask_path = source.with_name(str(info["mask"]))
        size_wh = (int(info["level0_size_wh"][0]), int(info["level0_size_wh"][1]))
        mpp, downsample = float(info["mpp"]), int(info["downsample"])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise PathError(info_path, f"is not a readable ground-truth record ({err})", "Write the slide again.") from err
    if not mask_path.is_file():
        raise PathError(mask_path, "is missing (the slide's ground truth)", "Write the slide again.")
    with open_slide(source) as slide:
        slide.identity()  # reads the file's header and last bytes: a cut file fails here
        levels, has_mpp = slide.level_count, slide.mpp_source == "metadata"
        if tuple(slide.dimensions) != size_wh:
            raise PathError(source, f"is {slide.dimensions}, its ground truth is for {size_wh}", "Write it again.")
    kind: SlideKind = "svs" if source.suffix.lower() == ".svs" else "tiff"
    marks_path = source.with_name(source.stem + ".marks.png")
    return SyntheticSlide(
        source,
        mask_path,
        info_path,
        size_wh,
        mpp,
        levels,
        downsample,
        kind,
        has_mpp,
        marks_path if marks_path.is_file() else None,
    )


def truncated_copy(
    source: str | os.PathLike[str], destination: str | os.PathLike[str], *, keep_fraction: float = 0.5
) -> Path:
    """Copy the first ``keep_fraction`` of a file's bytes: a slide cut short by a failed transfer."""
    if not 0.0 < keep_fraction < 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1), got {keep_fraction}")
    source, destination = Path(source), Path(destination)
    left = int(source.stat().st_size * keep_fraction)
    with open(source, "rb") as reader, atomic_write(destination) as tmp, open(tmp, "wb") as writer:
        while left > 0:
            chunk = reader.read(min(left, 1 << 20))
            if not chunk:
                break
            writer.write(chunk)
            left -= len(chunk)
    return destination
