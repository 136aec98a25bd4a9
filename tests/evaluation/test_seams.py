"""Seam ratio oracles: maps whose label changes lie on the tile grid, off it, or nowhere."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from histo_daen.evaluation.seams import SeamCounter, control_seam_ratio, seam_ratio


def _smooth_field_map(shape_hw: tuple[int, int], *, seed: int = 0) -> np.ndarray:
    """(h, w) map values 1..4: the strongest of four smoothed noise fields, curved borders anywhere on the grid."""
    noise = np.random.default_rng(seed).standard_normal((4, *shape_hw))
    fields = ndimage.gaussian_filter(noise, sigma=(0, 8, 8))
    return (np.argmax(fields, axis=0) + 1).astype(np.uint8)


def test_a_map_without_label_changes_is_seamless() -> None:
    assert seam_ratio(np.full((40, 60), 3, np.uint8), step=12) == 1.0


def test_changes_only_on_the_grid_have_an_undefined_ratio() -> None:
    labels = np.ones((48, 48), np.uint8)
    labels[:, 24:] = 2  # one straight border at a multiple of the step: every other position has no change
    assert seam_ratio(labels, step=12) is None


def test_curved_borders_off_the_grid_read_near_one() -> None:
    labels = _smooth_field_map((600, 800))
    assert seam_ratio(labels, step=20) == pytest.approx(1.0, abs=0.15)


def test_tile_disagreement_raises_the_ratio() -> None:
    """The same map with every second tile (20 px) relabelled on a share of its pixels: seams at the tile borders."""
    labels = _smooth_field_map((600, 800))
    tiled = labels.copy()
    rows, cols = np.mgrid[:600, :800]
    flip = ((rows // 20 + cols // 20) % 2 == 1) & (labels == 2)
    tiled[flip] = 3  # one class called another in alternate tiles only
    assert seam_ratio(tiled, step=20) > 1.6 > seam_ratio(labels, step=20)  # type: ignore[operator]


def test_no_tissue_pixels_take_no_part() -> None:
    labels = _smooth_field_map((600, 800))
    with_glass = labels.copy()
    with_glass[:, ::20] = 0  # glass columns on the grid: their borders with tissue would be changes at one position
    ratio = seam_ratio(with_glass, step=20)
    assert ratio is not None and ratio < 1.15


def test_bands_give_the_whole_map_profile() -> None:
    labels = _smooth_field_map((130, 170), seed=3)
    whole = SeamCounter(16)
    whole.add(labels)
    banded = SeamCounter(16)
    for top in (0, 7, 40, 41, 100):
        banded.add(labels[top : {0: 7, 7: 40, 40: 41, 41: 100, 100: 130}[top]])
    assert np.array_equal(whole.profile().changes, banded.profile().changes)
    assert np.array_equal(whole.profile().pairs, banded.profile().pairs)
    assert whole.profile().pairs.sum() == 2 * 130 * 170 - 130 - 170  # every adjacent pair of an all-tissue map


def test_step_must_be_positive() -> None:
    with pytest.raises(ValueError, match="step must be at least 1"):
        SeamCounter(0)


def test_control_ratio_reads_a_seamless_map_like_its_tile_step_and_a_tiled_map_lower() -> None:
    labels = _smooth_field_map((600, 800))
    control = control_seam_ratio(labels, 20)
    assert control is not None and abs(control - seam_ratio(labels, 20)) < 0.1  # type: ignore[operator]
    tiled = labels.copy()
    rows, cols = np.mgrid[:600, :800]
    tiled[((rows // 20 + cols // 20) % 2 == 1) & (labels == 2)] = 3
    assert seam_ratio(tiled, 20) > control_seam_ratio(tiled, 20) + 0.4  # type: ignore[operator]
