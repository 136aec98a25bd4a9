"""Pure resolution maths: plausible mpp, level choice with tolerance, level boxes."""

from __future__ import annotations

import math

import pytest

from histo_daen.slide.resolution import best_level_for_downsample, is_plausible_mpp, level_box_for_level0_box


@pytest.mark.parametrize("mpp", [0.05, 0.25, 0.5, 1.0, 20.0])
def test_scanner_resolutions_are_plausible(mpp: float) -> None:
    assert is_plausible_mpp(mpp)


@pytest.mark.parametrize("mpp", [None, 0.0, -0.5, 0.049, 20.5, 352.7777, 264.58, math.nan, math.inf])
def test_missing_default_dpi_and_nonsense_mpp_are_implausible(mpp: float | None) -> None:
    assert not is_plausible_mpp(mpp)


def test_best_level_is_the_coarsest_not_coarser_than_requested() -> None:
    downsamples = (1.0, 4.0, 16.0)
    assert best_level_for_downsample(downsamples, 4.0) == 1
    assert best_level_for_downsample(downsamples, 15.0) == 1
    assert best_level_for_downsample(downsamples, 15.9) == 2  # within 1 %: the 0.6 % blur costs nothing
    assert best_level_for_downsample(downsamples, 64.0) == 2
    assert best_level_for_downsample(downsamples, 0.5) == 0  # upsampling reads level 0


def test_best_level_tolerates_odd_level_sizes() -> None:
    # A 1503-px level 0 over a 751-px level 1: downsample 2.0013 still serves a request for 2.
    assert best_level_for_downsample((1.0, 1503 / 751, 1503 / 375), 2.0) == 1


def test_level_box_divides_position_and_size() -> None:
    assert level_box_for_level0_box((896, 448, 896, 896), 4.0) == ((224, 112), (224, 224))
