"""A slide map against its ground truth: pure arrays, no files."""

from __future__ import annotations

import numpy as np

from histo_daen.classes import LUAD
from histo_daen.evaluation.slide_agreement import map_agreement


def _truth() -> np.ndarray:
    truth = np.zeros((8, 10), dtype=np.uint8)  # at 16 level-0 px per pixel
    truth[2:6, 1:5], truth[2:6, 5:9] = 1, 3
    return truth


def test_a_map_agrees_perfectly_with_its_own_truth() -> None:
    truth = _truth()
    labels = truth.repeat(2, axis=0).repeat(2, axis=1)  # the map at 8 level-0 px per pixel
    agreement = map_agreement(labels, 8.0, truth, 16.0, classes=LUAD)
    assert agreement.scores.pixel_accuracy == 1.0 and agreement.tissue_iou == 1.0
    assert agreement.scores.iou[0] == 1.0 and agreement.scores.iou[2] == 1.0


def test_a_wrong_class_halves_the_accuracy_but_not_the_tissue() -> None:
    truth = _truth()
    labels = truth.repeat(2, axis=0).repeat(2, axis=1)
    wrong = truth.copy()
    wrong[2:6, 5:9] = 2  # the truth says NEC where the map says LYM
    agreement = map_agreement(labels, 8.0, wrong, 16.0, classes=LUAD)
    assert agreement.scores.pixel_accuracy == 0.5 and agreement.tissue_iou == 1.0


def test_tissue_the_map_misses_counts_against_it() -> None:
    truth = _truth()
    labels = np.zeros((16, 20), dtype=np.uint8)
    labels[4:12, 2:10] = 1  # only the TE region found
    agreement = map_agreement(labels, 8.0, truth, 16.0, classes=LUAD)
    assert agreement.tissue_iou == 0.5 and agreement.scores.pixel_accuracy == 0.5
