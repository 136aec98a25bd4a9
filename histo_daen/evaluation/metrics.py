"""Segmentation scores the way the LUAD-HistoSeg community computes them (reference.md §6.5); pure numpy.

The protocol (WSSS-Tissue / MLPS, stage 1 and 2 agree on it):

- **one confusion matrix over the whole split** (pixels of all images summed, not a per-image mean);
- pixels whose ground truth is the exclude index (4, white background) are **ignored**;
- a *prediction* of exclude on a tissue pixel is kept: it counts as a miss for the ground-truth class;
- IoU_c = TP / (GT_c + Pred_c - TP) for the K tissue classes; **mIoU = nanmean over the K classes** (a class absent
  from both ground truth and prediction has no IoU and does not count);
- FwIoU = sum_c freq_c * IoU_c with freq_c the ground-truth pixel share (classes with freq > 0); pixel accuracy and
  mean class accuracy (nanmean of TP / GT_c).

TPRO scores differently (a 5x5 matrix with background as a predictable class, IoU averaged over the first 4); numbers
from the two protocols are not comparable, and :data:`PROTOCOL` names this one in every output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PROTOCOL", "Scores", "confusion_matrix", "scores"]

PROTOCOL = "mlps"  # the LUAD-HistoSeg protocol of WSSS-Tissue (reference.md §6.5)


def confusion_matrix(
    ground_truth: np.ndarray, prediction: np.ndarray, *, num_classes: int = 4, exclude_index: int = 4
) -> np.ndarray:
    """Count (ground truth, prediction) pixel pairs of one image or batch, ignoring excluded ground truth.

    Sum the matrices of all images of a split, then call :func:`scores` once.

    Args:
        ground_truth: (..., H, W) integer dataset indices in [0, num_classes], ``exclude_index`` = ignore.
        prediction: same shape, integer indices in [0, num_classes]; ``exclude_index`` on a tissue pixel is a miss.
        num_classes: K, the scored tissue classes (LUAD: 4).
        exclude_index: the ignore value of the masks; must be ``num_classes`` (the extra column of the matrix).

    Returns:
        (K + 1, K + 1) int64: ``[g, p]`` counts pixels with ground truth g and prediction p. Row K (excluded ground
        truth) is always zero; column K counts tissue pixels predicted as exclude.

    Raises:
        ValueError: shapes differ, or a value lies outside [0, num_classes].
    """
    if exclude_index != num_classes:
        raise ValueError(f"exclude_index must be num_classes ({num_classes}), got {exclude_index}")
    truth = np.asarray(ground_truth)
    predicted = np.asarray(prediction)
    if truth.shape != predicted.shape:
        raise ValueError(f"ground truth {truth.shape} and prediction {predicted.shape} differ in shape")
    for name, values in (("ground truth", truth), ("prediction", predicted)):
        if values.size and (values.min() < 0 or values.max() > num_classes):
            raise ValueError(
                f"{name} holds values outside [0, {num_classes}]: {sorted(set(np.unique(values).tolist()))}"
            )
    scored = truth != exclude_index
    size = num_classes + 1
    pairs = truth[scored].astype(np.int64) * size + predicted[scored].astype(np.int64)
    return np.bincount(pairs, minlength=size * size).reshape(size, size)


@dataclass(frozen=True)
class Scores:
    """The scores of one confusion matrix, as fractions in [0, 1] (tables multiply by 100).

    Attributes:
        iou: per-class IoU, K values; NaN for a class absent from both ground truth and prediction.
        miou: nanmean of ``iou`` (NaN only if nothing was scored).
        fw_iou: frequency-weighted IoU.
        pixel_accuracy: correctly labelled scored pixels / scored pixels.
        mean_class_accuracy: nanmean over classes of TP / ground-truth pixels of the class.
        n_pixels: scored (non-excluded) ground-truth pixels.
        class_pixels: ground-truth pixels per class, K values.
    """

    iou: tuple[float, ...]
    miou: float
    fw_iou: float
    pixel_accuracy: float
    mean_class_accuracy: float
    n_pixels: int
    class_pixels: tuple[int, ...]

    def as_dict(self, codes: tuple[str, ...]) -> dict[str, Any]:
        """JSON-ready: ``{"iou": {code: value | None}, "miou": ..., ...}`` (NaN written as ``None``)."""
        if len(codes) != len(self.iou):
            raise ValueError(f"{len(codes)} class codes for {len(self.iou)} classes")
        return {
            "iou": {code: _json_float(v) for code, v in zip(codes, self.iou, strict=True)},
            "miou": _json_float(self.miou),
            "fw_iou": _json_float(self.fw_iou),
            "pixel_accuracy": _json_float(self.pixel_accuracy),
            "mean_class_accuracy": _json_float(self.mean_class_accuracy),
            "n_pixels": self.n_pixels,
            "class_pixels": dict(zip(codes, self.class_pixels, strict=True)),
        }


def _json_float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def scores(matrix: np.ndarray) -> Scores:
    """Per-class IoU, mIoU, FwIoU, pixel and mean class accuracy of a :func:`confusion_matrix` sum.

    Args:
        matrix: (K + 1, K + 1) counts, rows = ground truth, columns = prediction; row K (exclude) is ignored.
    """
    counts = np.asarray(matrix, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] < 2:
        raise ValueError(f"expected a (K + 1, K + 1) confusion matrix, got shape {counts.shape}")
    k = counts.shape[0] - 1
    tissue = counts[:k]  # excluded ground truth is not scored
    true_positive = np.diag(counts)[:k]
    class_pixels = tissue.sum(axis=1)  # includes tissue predicted as exclude: those are misses
    predicted_pixels = tissue.sum(axis=0)[:k]
    union = class_pixels + predicted_pixels - true_positive
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        class_accuracy = np.where(class_pixels > 0, true_positive / class_pixels, np.nan)
    n_pixels = class_pixels.sum()
    if n_pixels > 0:
        frequency = class_pixels / n_pixels
        present = frequency > 0
        fw_iou = float((frequency[present] * iou[present]).sum())
        pixel_accuracy = float(true_positive.sum() / n_pixels)
    else:
        fw_iou = pixel_accuracy = float("nan")
    return Scores(
        iou=tuple(float(v) for v in iou),
        miou=_nanmean(iou),
        fw_iou=fw_iou,
        pixel_accuracy=pixel_accuracy,
        mean_class_accuracy=_nanmean(class_accuracy),
        n_pixels=int(n_pixels),
        class_pixels=tuple(int(v) for v in class_pixels),
    )
