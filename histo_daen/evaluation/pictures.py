"""The pictures of an evaluation: the confusion matrix, and image | ground truth | prediction examples.

Colours come from the class table (:mod:`histo_daen.classes`). Figures are drawn with matplotlib's object API on an
Agg canvas (no pyplot, no global figure state), so they work in worker processes and headless machines.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from histo_daen.atomic import atomic_write
from histo_daen.classes import ClassSet

__all__ = ["colour_mask", "save_confusion_matrix", "save_example"]

_OVERLAY_OPACITY = 0.55  # class colour over the tissue: strong enough to read, light enough to see the tissue


def colour_mask(mask: np.ndarray, image: np.ndarray, class_set: ClassSet) -> np.ndarray:
    """Class colours blended over the image; exclude pixels show the plain image.

    Args:
        mask: (H, W) integer dataset indices (``class_set.exclude_index`` = exclude).
        image: (H, W, 3) uint8 RGB.
        class_set: the colours.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    colours = np.zeros((256, 3), dtype=np.float32)
    for cls in class_set.classes:
        colours[cls.index] = cls.colour
    coloured = colours[mask.astype(np.uint8)]
    tissue = (mask != class_set.exclude_index)[..., None]
    blended = np.where(tissue, (1 - _OVERLAY_OPACITY) * image + _OVERLAY_OPACITY * coloured, image)
    return blended.round().astype(np.uint8)


def _rgb01(colour: tuple[int, int, int]) -> tuple[float, float, float]:
    return (colour[0] / 255, colour[1] / 255, colour[2] / 255)


def _save_figure(figure: object, path: Path) -> None:
    with atomic_write(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)  # type: ignore[attr-defined]


def save_confusion_matrix(
    path: str | os.PathLike[str], matrix: np.ndarray, class_set: ClassSet, *, title: str = ""
) -> Path:
    """Draw a split's confusion matrix, rows normalised (each row: where that class's pixels went), with counts.

    Args:
        path: the PNG to write.
        matrix: (K + 1, K + 1) counts from ``evaluation.metrics.confusion_matrix``; the exclude row (always
            empty) is not drawn, the exclude column (tissue predicted as exclude) is.
        class_set: class codes for the axes.
        title: shown above the matrix.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = len(class_set)
    counts = np.asarray(matrix)[:k]  # (K, K + 1)
    row_totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, row_totals, out=np.zeros(counts.shape, dtype=np.float64), where=row_totals > 0)
    figure = Figure(figsize=(1.3 * (k + 1) + 2, 1.1 * k + 1.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    shown = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    codes = list(class_set.codes)
    axes.set_xticks(range(k + 1), [*codes, "exclude"])
    axes.set_yticks(range(k), codes)
    axes.set_xlabel("prediction")
    axes.set_ylabel("ground truth")
    for row in range(k):
        for col in range(k + 1):
            colour = "white" if fractions[row, col] > 0.6 else "black"
            text = f"{100 * fractions[row, col]:.1f}%\n{int(counts[row, col]):,}"
            axes.text(col, row, text, ha="center", va="center", color=colour, fontsize=8)
    figure.colorbar(shown, ax=axes, fraction=0.05, label="share of the ground-truth class")
    if title:
        axes.set_title(title, fontsize=10)
    target = Path(path)
    _save_figure(figure, target)
    return target


def save_example(
    path: str | os.PathLike[str],
    image: np.ndarray,
    truth: np.ndarray,
    prediction: np.ndarray,
    class_set: ClassSet,
    *,
    title: str = "",
) -> Path:
    """Write one image | ground truth | prediction picture with a colour legend.

    Args:
        path: the PNG to write.
        image: (H, W, 3) uint8 RGB patch.
        truth: (H, W) ground-truth indices; prediction: (H, W) predicted indices.
        class_set: colours and names.
        title: e.g. the patch name and its image-level labels.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    figure = Figure(figsize=(9.6, 3.9), layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, 3)
    for axes, picture, name in zip(
        panels,
        (image, colour_mask(truth, image, class_set), colour_mask(prediction, image, class_set)),
        ("image", "ground truth", "prediction"),
        strict=True,
    ):
        axes.imshow(picture, interpolation="nearest")
        axes.set_title(name, fontsize=10)
        axes.set_axis_off()
    handles = [Patch(color=_rgb01(c.colour), label=c.code) for c in class_set.classes]
    handles.append(Patch(facecolor="white", edgecolor="grey", label="exclude"))
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    if title:
        figure.suptitle(title, fontsize=9)
    target = Path(path)
    _save_figure(figure, target)
    return target
