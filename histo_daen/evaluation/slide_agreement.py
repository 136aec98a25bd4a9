"""How well a slide-level tissue map agrees with a ground-truth map of the same slide (synthetic slides know it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from histo_daen.classes import ClassSet
from histo_daen.evaluation.metrics import Scores, confusion_matrix, scores

__all__ = ["MapAgreement", "map_agreement"]


@dataclass(frozen=True)
class MapAgreement:
    """The agreement of a map with the truth.

    Attributes:
        scores: LUAD-protocol scores over the truth's tissue (glass ignored; tissue the map calls no tissue is a
            miss).
        tissue_iou: IoU of the tissue found (map value > 0) with the true tissue; NaN when both are empty.
    """

    scores: Scores
    tissue_iou: float


def map_agreement(
    labels: np.ndarray,
    map_downsample: float,
    truth: np.ndarray,
    truth_downsample: float,
    *,
    classes: ClassSet,
) -> MapAgreement:
    """Score a slide's tissue map against its ground truth, at the ground truth's resolution.

    Args:
        labels: (H, W) uint8 map values of the map (0 no tissue, class ``k`` at ``k + 1``), e.g. level s0 of a
            tissue map.
        map_downsample: level-0 pixels per map pixel.
        truth: (h, w) uint8 map values of the ground truth of the whole slide.
        truth_downsample: level-0 pixels per ground-truth pixel.
        classes: the class set of both maps.

    Returns:
        The :class:`MapAgreement`. Each ground-truth pixel is compared with the map pixel under its centre.
    """
    height, width = truth.shape
    rows = ((np.arange(height) + 0.5) * truth_downsample / map_downsample).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * truth_downsample / map_downsample).astype(np.int64)
    predicted = labels[np.ix_(np.minimum(rows, labels.shape[0] - 1), np.minimum(cols, labels.shape[1] - 1))]
    exclude = classes.exclude_index
    # Map values -> dataset indices: class k + 1 -> k, glass / no tissue -> exclude.
    truth_index = np.where(truth > 0, truth.astype(np.int64) - 1, exclude)
    predicted_index = np.where(predicted > 0, predicted.astype(np.int64) - 1, exclude)
    matrix = confusion_matrix(truth_index, predicted_index, num_classes=len(classes), exclude_index=exclude)
    tissue_true, tissue_found = truth > 0, predicted > 0
    union = int((tissue_true | tissue_found).sum())
    iou = float((tissue_true & tissue_found).sum() / union) if union else float("nan")
    return MapAgreement(scores(matrix), iou)
