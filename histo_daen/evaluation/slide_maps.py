"""Slide maps against a slide's ground truth: agreement scores at the truth's resolution (synthetic slides).

The map is sampled at each ground-truth pixel's centre and scored with the LUAD-HistoSeg protocol of
:mod:`histo_daen.evaluation.metrics`, over the truth's tissue. Used by the demo and ``benchmarks/bench_slide_maps.py``;
the tile-grid artefacts of a map are measured by :mod:`histo_daen.evaluation.seams`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from histo_daen.evaluation.metrics import confusion_matrix, scores

__all__ = ["map_agreement"]


def map_agreement(tissue_map: Any, truth: np.ndarray, truth_downsample: float) -> dict[str, Any]:
    """Score a slide's tissue map against its ground truth at the ground truth's resolution.

    Args:
        tissue_map: a finished :class:`~histo_daen.export.zarr_map.TissueMap`.
        truth: (h, w) uint8 map values (0 glass, 1..K classes) of the whole slide.
        truth_downsample: level-0 pixels per ground-truth pixel.

    Returns:
        ``scores``: LUAD-protocol scores over the ground truth's tissue (glass ignored; tissue the map calls no
        tissue counts as a miss), and ``tissue_iou``: IoU of the tissue found (map > 0) with the true tissue.
    """
    height, width = truth.shape
    labels = tissue_map.labels(0)
    # The map pixel under each ground-truth pixel centre.
    rows = ((np.arange(height) + 0.5) * truth_downsample / tissue_map.map_downsample).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * truth_downsample / tissue_map.map_downsample).astype(np.int64)
    predicted = np.asarray(labels.oindex[np.minimum(rows, labels.shape[0] - 1), np.minimum(cols, labels.shape[1] - 1)])
    n_classes = len(tissue_map.classes)
    exclude = tissue_map.classes.exclude_index
    # Map values -> dataset indices: class k + 1 -> k, glass / no tissue -> exclude.
    as_index = np.where(truth > 0, truth.astype(np.int64) - 1, exclude)
    predicted_index = np.where(predicted > 0, predicted.astype(np.int64) - 1, exclude)
    matrix = confusion_matrix(as_index, predicted_index, num_classes=n_classes, exclude_index=exclude)
    tissue_true, tissue_found = truth > 0, predicted > 0
    union = int((tissue_true | tissue_found).sum())
    return {
        "scores": scores(matrix),
        "tissue_iou": float((tissue_true & tissue_found).sum() / union) if union else float("nan"),
    }
