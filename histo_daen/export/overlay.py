"""A picture of a tissue map: the classes over the slide thumbnail, with a legend of per-class areas (mm² and %)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from histo_daen.atomic import atomic_write
from histo_daen.export.zarr_map import ClassArea, TissueMap, class_areas, reading_map

__all__ = ["label_thumbnail", "overlay_labels", "write_overview"]

logger = logging.getLogger(__name__)

DEFAULT_OPACITY = 0.45  # enough colour to read the classes, enough stain to see the tissue under them


def label_thumbnail(tissue_map: TissueMap, shape_hw: tuple[int, int], *, slide_size_wh: tuple[int, int]) -> np.ndarray:
    """The map's labels at the pixel centres of a slide thumbnail (nearest), from the coarsest fine-enough level.

    Args:
        tissue_map: a finished map.
        shape_hw: (height, width) of the thumbnail.
        slide_size_wh: (width, height) of the slide's level 0, which the thumbnail shows whole.

    Returns:
        (height, width) uint8 map values.
    """
    height, width = shape_hw
    ds_x, ds_y = slide_size_wh[0] / width, slide_size_wh[1] / height  # level-0 pixels per thumbnail pixel
    # The coarsest level whose pixels are still no larger than a thumbnail pixel reads the fewest chunks.
    level = 0
    while level + 1 < tissue_map.n_levels and tissue_map.map_downsample * 2 ** (level + 1) <= min(ds_x, ds_y):
        level += 1
    labels = tissue_map.labels(level)
    level_downsample = tissue_map.map_downsample * 2**level
    rows = np.clip(((np.arange(height) + 0.5) * ds_y / level_downsample).astype(np.int64), 0, labels.shape[0] - 1)
    cols = np.clip(((np.arange(width) + 0.5) * ds_x / level_downsample).astype(np.int64), 0, labels.shape[1] - 1)
    with reading_map(tissue_map.path):
        return np.asarray(labels.oindex[rows, cols], dtype=np.uint8)


def overlay_labels(
    thumbnail: np.ndarray, labels: np.ndarray, colours: dict[int, tuple[int, int, int]], *, opacity: float
) -> np.ndarray:
    """Blend class colours over a thumbnail where the map has tissue.

    Args:
        thumbnail: (h, w, 3) uint8 RGB.
        labels: (h, w) uint8 map values; 0 leaves the thumbnail as it is.
        colours: map value -> (r, g, b).
        opacity: weight of the class colour in [0, 1].

    Returns:
        (h, w, 3) uint8 RGB.
    """
    if thumbnail.shape[:2] != labels.shape:
        raise ValueError(f"thumbnail {thumbnail.shape[:2]} and labels {labels.shape} differ in size")
    palette = np.zeros((256, 3), dtype=np.float32)
    for value, colour in colours.items():
        palette[value] = colour
    alpha = np.where(labels > 0, opacity, 0.0)[..., None]
    blended = thumbnail.astype(np.float32) * (1 - alpha) + palette[labels] * alpha
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _legend_text(area: ClassArea) -> str:
    return f"{area.code} ({area.name}): {area.area_mm2:.2f} mm², {area.percent_of_tissue:.1f} %"


def write_overview(
    thumbnail: np.ndarray,
    tissue_map: TissueMap,
    path: str | os.PathLike[str],
    *,
    slide_size_wh: tuple[int, int],
    title: str = "",
    opacity: float = DEFAULT_OPACITY,
    areas: list[ClassArea] | None = None,
) -> Path:
    """Write a PNG of the map over the thumbnail (left) beside the bare thumbnail (right), with a legend.

    Args:
        thumbnail: (h, w, 3) uint8 RGB of the whole slide (``Slide.thumbnail``).
        tissue_map: the finished map of that slide.
        path: the PNG to write (atomically).
        slide_size_wh: (width, height) of the slide's level 0.
        title: shown above the pictures (e.g. the slide's name).
        opacity: weight of the class colours.
        areas: per-class areas for the legend (computed from the map when None).

    Returns:
        The path written.
    """
    # A bare Figure renders with Agg and touches no global pyplot state (safe in workers, no display needed).
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    labels = label_thumbnail(tissue_map, thumbnail.shape[:2], slide_size_wh=slide_size_wh)
    colours = {cls.map_value: cls.colour for cls in tissue_map.classes.classes}
    picture = overlay_labels(thumbnail, labels, colours, opacity=opacity)
    areas = class_areas(tissue_map) if areas is None else areas
    tissue_mm2 = sum(area.area_mm2 for area in areas)

    height, width = thumbnail.shape[:2]
    panel_w = 6.0
    panel_h = max(2.0, panel_w * height / width)
    figure = Figure(figsize=(2 * panel_w, panel_h + 1.6), dpi=110, layout="constrained")
    left, right = figure.subplots(1, 2)
    left.imshow(picture, interpolation="nearest")
    left.set_title("tissue map", fontsize=10)
    right.imshow(thumbnail, interpolation="nearest")
    right.set_title("slide", fontsize=10)
    for axis in (left, right):
        axis.set_xticks([])
        axis.set_yticks([])
    handles = [
        Patch(facecolor=(area.colour[0] / 255, area.colour[1] / 255, area.colour[2] / 255), label=_legend_text(area))
        for area in areas
    ]
    figure.legend(
        handles=handles,
        loc="outside lower center",
        ncol=2,
        fontsize=9,
        frameon=False,
        title=f"tissue {tissue_mm2:.2f} mm² at {tissue_map.map_mpp:.2f} µm/px",
        title_fontsize=9,
    )
    if title:
        figure.suptitle(title, fontsize=11)
    target = Path(path)
    with atomic_write(target) as tmp:
        # Fixed metadata: the same map gives the same bytes (matplotlib otherwise stamps its version and software).
        figure.savefig(tmp, format="png", metadata={"Software": None})
    logger.info("wrote %s", target)
    return target
