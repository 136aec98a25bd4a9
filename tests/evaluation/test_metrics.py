"""Scoring oracles on hand-made masks: values computed by hand, not pasted from a run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from histo_daen.evaluation.metrics import confusion_matrix, scores


def test_mask_against_itself_scores_one() -> None:
    mask = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [4, 4, 0, 1]], dtype=np.uint8)
    result = scores(confusion_matrix(mask, mask))
    assert result.iou == (1.0, 1.0, 1.0, 1.0)
    assert result.miou == 1.0
    assert result.fw_iou == pytest.approx(1.0)
    assert result.pixel_accuracy == 1.0
    assert result.n_pixels == 10  # the two exclude pixels are not scored


def test_mask_against_its_complement_scores_zero() -> None:
    truth = np.array([[0, 0], [1, 1]], dtype=np.uint8)
    complement = 1 - truth
    result = scores(confusion_matrix(truth, complement))
    assert result.iou[:2] == (0.0, 0.0)
    assert math.isnan(result.iou[2]) and math.isnan(result.iou[3])  # absent from both: no IoU
    assert result.miou == 0.0
    assert result.pixel_accuracy == 0.0


def test_known_two_by_two_case() -> None:
    # TE: TP 1, GT 1, Pred 2 -> 1/2.  NEC: TP 2, GT 3, Pred 2 -> 2/3.  LYM/TAS absent -> NaN, left out of the mean.
    truth = np.array([[0, 1], [1, 1]], dtype=np.uint8)
    prediction = np.array([[0, 0], [1, 1]], dtype=np.uint8)
    result = scores(confusion_matrix(truth, prediction))
    assert result.iou[0] == pytest.approx(1 / 2)
    assert result.iou[1] == pytest.approx(2 / 3)
    assert result.miou == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result.fw_iou == pytest.approx(0.25 * 1 / 2 + 0.75 * 2 / 3)
    assert result.pixel_accuracy == pytest.approx(3 / 4)
    assert result.mean_class_accuracy == pytest.approx((1 + 2 / 3) / 2)
    assert result.class_pixels == (1, 3, 0, 0)


def test_excluded_ground_truth_is_ignored_whatever_is_predicted_there() -> None:
    truth = np.array([[0, 4], [4, 4]], dtype=np.uint8)
    prediction = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    matrix = confusion_matrix(truth, prediction)
    assert matrix.sum() == 1
    assert scores(matrix).iou[0] == 1.0
    assert math.isnan(scores(matrix).iou[1])  # NEC predicted only on excluded pixels: never counted


def test_exclude_predicted_on_tissue_is_a_miss() -> None:
    truth = np.array([[2, 2], [2, 2]], dtype=np.uint8)
    prediction = np.array([[2, 2], [2, 4]], dtype=np.uint8)
    result = scores(confusion_matrix(truth, prediction))
    assert result.iou[2] == pytest.approx(3 / 4)
    assert result.pixel_accuracy == pytest.approx(3 / 4)


def test_split_level_matrix_is_not_a_mean_of_per_image_scores() -> None:
    # Image A: 1 TE pixel wrong out of 1. Image B: 3 TE pixels right. Split-level TE IoU = 3/4, per-image mean = 1/2.
    truth_a, prediction_a = np.array([[0]]), np.array([[1]])
    truth_b, prediction_b = np.array([[0, 0, 0]]), np.array([[0, 0, 0]])
    total = confusion_matrix(truth_a, prediction_a) + confusion_matrix(truth_b, prediction_b)
    assert scores(total).iou[0] == pytest.approx(3 / 4)


def test_confusion_matrix_refuses_values_outside_the_classes() -> None:
    with pytest.raises(ValueError, match=r"ground truth holds values outside \[0, 4\]: \[0, 255\]"):
        confusion_matrix(np.array([[0, 255]]), np.array([[0, 0]]))


def test_confusion_matrix_refuses_different_shapes() -> None:
    with pytest.raises(ValueError, match=r"differ in shape"):
        confusion_matrix(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))


def test_scores_of_an_empty_matrix_are_nan() -> None:
    result = scores(np.zeros((5, 5), dtype=np.int64))
    assert math.isnan(result.miou) and math.isnan(result.pixel_accuracy)
    assert result.n_pixels == 0


def test_as_dict_writes_nan_as_none_and_names_classes() -> None:
    result = scores(confusion_matrix(np.array([[0, 1]]), np.array([[0, 1]])))
    plain = result.as_dict(("TE", "NEC", "LYM", "TAS"))
    assert plain["iou"] == {"TE": 1.0, "NEC": 1.0, "LYM": None, "TAS": None}
    assert plain["class_pixels"] == {"TE": 1, "NEC": 1, "LYM": 0, "TAS": 0}
