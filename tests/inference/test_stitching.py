"""Overlap stitching: window weights, the identity oracle, band order and resume."""

from __future__ import annotations

import numpy as np
import pytest

from histo_daen.inference.stitching import (
    WINDOW_FLOOR,
    BandStitcher,
    RampProfile,
    blend_window,
    map_values_from_scores,
)


def _tile_origins(length: int, tile: int, stride: int) -> list[int]:
    """Tile starts covering [0, length), the last tile allowed to run past the end."""
    return list(range(0, max(1, length - tile + stride), stride))


def _stitch(image: np.ndarray, *, tile: int, overlap: int, band_height: int, first_band: int = 0) -> list[np.ndarray]:
    """Cut (C, H, W) into overlapping tiles (white-padded past the edge), stitch them back, return the bands."""
    channels, height, width = image.shape
    padded = np.pad(image, ((0, 0), (0, tile), (0, tile)), constant_values=-7.0)  # never seen inside the map
    stitcher = BandStitcher(
        shape_hw=(height, width),
        n_channels=channels,
        band_height=band_height,
        tile_shape_hw=(tile, tile),
        window=blend_window((tile, tile), overlap),
        first_band=first_band,
    )
    bands = []
    stride = tile - overlap
    for y0 in _tile_origins(height, tile, stride):
        bands += [band.values for band in stitcher.finished_before(y0)]
        for x0 in _tile_origins(width, tile, stride):
            stitcher.add(padded[:, y0 : y0 + tile, x0 : x0 + tile], y0, x0)
    bands += [band.values for band in stitcher.finish()]
    return bands


def test_blend_window_is_one_inside_and_ramps_to_the_floor_at_the_edges() -> None:
    window = blend_window((16, 12), 4)
    assert window.shape == (16, 12) and window.dtype == np.float32
    assert np.all(window[4:12, 4:8] == 1.0)
    assert window.min() == pytest.approx(window[0, 0]) and window[0, 0] > WINDOW_FLOOR * 0.9
    np.testing.assert_allclose(window, window[::-1, ::-1])  # symmetric


@pytest.mark.parametrize("profile", ["cosine", "linear"])
def test_neighbouring_ramps_cross_fade_to_one_plus_floor(profile: RampProfile) -> None:
    """Ramps of two tiles overlapping by the margin sum to a constant: no bright or dark seam."""
    margin = 6
    ramp = blend_window((1, 20), margin, profile=profile)[0]
    summed = ramp[-margin:] + ramp[:margin]  # the right edge of one tile over the left edge of the next
    np.testing.assert_allclose(summed, 1.0 + WINDOW_FLOOR, rtol=1e-6)


def test_linear_ramps_over_half_the_tile_interpolate_evenly_between_tile_centres() -> None:
    """Tiles of 16 overlapping by 8: every column's share of the second tile grows by the same step, 1/8."""
    window = blend_window((1, 16), 8, profile="linear")[0]
    second_share = window[:8] / (window[:8] + window[8:])  # columns 8..15 of tile one are columns 0..7 of tile two
    np.testing.assert_allclose(np.diff(second_share), 1 / 8, rtol=3 * WINDOW_FLOOR)  # the floor shifts it a little


def test_unknown_ramp_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="profile must be 'linear' or 'cosine'"):
        blend_window((4, 4), 2, profile="gaussian")  # type: ignore[arg-type]


def test_flat_window_without_margin() -> None:
    assert np.all(blend_window((5, 7), 0) == 1.0)


def test_identity_tiles_stitch_back_to_the_image() -> None:
    """MONAI's oracle: tiles that are crops of the image, blended with any weights, give back the image."""
    rng = np.random.default_rng(0)
    image = rng.random((3, 70, 90)).astype(np.float32)
    bands = _stitch(image, tile=16, overlap=4, band_height=16)
    assert [band.shape[1] for band in bands] == [16, 16, 16, 16, 6]
    np.testing.assert_allclose(np.concatenate(bands, axis=1), image, rtol=1e-5, atol=1e-6)


def test_overlap_is_the_window_weighted_mean() -> None:
    window = blend_window((8, 8), 4)
    stitcher = BandStitcher(shape_hw=(8, 12), n_channels=1, band_height=8, tile_shape_hw=(8, 8), window=window)
    stitcher.add(np.full((1, 8, 8), 1.0, dtype=np.float32), 0, 0)
    stitcher.add(np.full((1, 8, 8), 5.0, dtype=np.float32), 0, 4)
    (band,) = stitcher.finish()
    # Column 5 is column 5 of the first tile and column 1 of the second.
    w_first, w_second = window[3, 5], window[3, 1]
    expected = (w_first * 1.0 + w_second * 5.0) / (w_first + w_second)
    assert band.values[0, 3, 5] == pytest.approx(expected, rel=1e-6)
    assert band.values[0, 3, 0] == pytest.approx(1.0) and band.values[0, 3, 11] == pytest.approx(5.0)
    assert band.covered.all()


def test_pixels_no_tile_touches_are_uncovered_and_zero() -> None:
    stitcher = BandStitcher(
        shape_hw=(10, 10), n_channels=2, band_height=5, tile_shape_hw=(4, 4), window=blend_window((4, 4), 1)
    )
    (first,) = stitcher.finished_before(6)
    stitcher.add(np.ones((2, 4, 4), dtype=np.float32), 6, 6)
    (second,) = stitcher.finish()
    assert not first.covered.any() and np.all(first.values == 0)
    assert second.covered[1:5, 6:10].all() and second.covered.sum() == 16
    assert np.all(second.values[:, 1:5, 6:10] == 1.0)


def test_resumed_bands_are_bit_identical_to_an_uninterrupted_run() -> None:
    rng = np.random.default_rng(1)
    image = rng.random((4, 64, 40)).astype(np.float32)
    full = _stitch(image, tile=12, overlap=4, band_height=8)
    resumed = _stitch(image, tile=12, overlap=4, band_height=8, first_band=3)
    assert len(resumed) == len(full) - 3
    for a, b in zip(full[3:], resumed, strict=True):
        assert np.array_equal(a, b)


def test_a_tile_beyond_the_current_band_is_refused() -> None:
    stitcher = BandStitcher(
        shape_hw=(32, 8), n_channels=1, band_height=8, tile_shape_hw=(4, 4), window=blend_window((4, 4), 0)
    )
    with pytest.raises(ValueError, match=r"finished_before\(16\)"):
        stitcher.add(np.ones((1, 4, 4), dtype=np.float32), 16, 0)


def test_map_values_from_scores_are_class_plus_one_on_tissue_only() -> None:
    scores = np.zeros((4, 2, 3), dtype=np.float32)
    scores[2, 0, 0] = 0.9  # LYM
    scores[3, 0, 1] = 0.4  # TAS
    scores[0, 1, :] = 0.2  # TE
    is_tissue = np.array([[True, True, False], [True, True, True]])
    assert map_values_from_scores(scores, is_tissue).tolist() == [[3, 4, 0], [1, 1, 1]]


def test_context_pixels_weigh_only_the_floor_and_the_used_parts_cross_fade() -> None:
    """A 28-px tile with 4 px of context at each edge: its used 20 px ramp over half their width, so tiles 10 px
    apart (the step of half-overlapping used parts) sum to one wherever their used parts meet."""
    window = np.sqrt(np.diag(blend_window((28, 28), 10, profile="linear", context=4)))  # the outer product's factor
    np.testing.assert_allclose(window[:4], WINDOW_FLOOR, rtol=1e-6)
    np.testing.assert_allclose(window[24:], WINDOW_FLOOR, rtol=1e-6)
    np.testing.assert_allclose(window[4:24], blend_window((1, 20), 10, profile="linear")[0], rtol=1e-6)
    summed = window[14:24] + window[4:14]  # the right half of one tile's used part over the left half of the next's
    np.testing.assert_allclose(summed, 1.0 + WINDOW_FLOOR, rtol=1e-6)


def test_context_must_leave_part_of_the_tile() -> None:
    with pytest.raises(ValueError, match="context 8 must leave part of a 16 x 16 tile"):
        blend_window((16, 16), 0, context=8)
