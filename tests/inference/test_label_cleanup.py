"""Label clean-up: small class regions take their surroundings' class; bands give the whole map's answer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from histo_daen.inference.label_cleanup import BandCleaner, remove_small_regions


def test_a_small_island_takes_the_class_around_it() -> None:
    labels = np.full((12, 12), 2, np.uint8)
    labels[5:7, 5:7] = 4  # 4 pixels of TAS inside LYM
    labels[0:6, 9:12] = 1  # 18 pixels of TE at the edge
    cleaned = remove_small_regions(labels, 10)
    assert np.all(cleaned[5:7, 5:7] == 2)
    assert np.all(cleaned[0:6, 9:12] == 1)  # large enough: kept
    assert cleaned is not labels and labels[5, 5] == 4  # the input is not changed


def test_no_tissue_never_changes_and_tissue_never_becomes_no_tissue() -> None:
    labels = np.zeros((10, 10), np.uint8)
    labels[2:8, 2:8] = 3
    labels[4, 4] = 1  # one pixel of TE
    labels[0, 0] = 2  # one pixel of LYM alone on glass: nothing around it to take
    cleaned = remove_small_regions(labels, 5)
    assert cleaned[4, 4] == 3
    assert np.array_equal(cleaned > 0, labels > 0)
    assert cleaned[0, 0] in (2, 3)  # it takes the nearest kept tissue class, never 0


def test_regions_touching_an_open_edge_are_kept() -> None:
    labels = np.full((6, 8), 2, np.uint8)
    labels[0:2, 3:5] = 1  # 4 pixels at the top edge: the map may go on above
    assert np.all(remove_small_regions(labels, 10, open_top=True)[0:2, 3:5] == 1)
    assert np.all(remove_small_regions(labels, 10)[0:2, 3:5] == 2)


def test_minimum_of_one_pixel_changes_nothing() -> None:
    labels = np.random.default_rng(0).integers(0, 5, (8, 8)).astype(np.uint8)
    assert remove_small_regions(labels, 1) is labels


def _speckled_map(shape_hw: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth class regions with specks of 1-12 pixels, and a glass border."""
    rng = np.random.default_rng(seed)
    fields = ndimage.gaussian_filter(rng.standard_normal((4, *shape_hw)), sigma=(0, 6, 6))
    labels = (fields.argmax(axis=0) + 1).astype(np.uint8)
    specks = rng.random(shape_hw) < 0.02
    labels[specks] = rng.integers(1, 5, int(specks.sum()))
    labels[:, :3] = 0
    return labels


@pytest.mark.parametrize("band_height", [7, 16, 40])
def test_bands_give_the_same_labels_as_the_whole_map(band_height: int) -> None:
    labels = _speckled_map((90, 70), seed=band_height)
    min_pixels = 6
    whole = remove_small_regions(labels, min_pixels)
    cleaner = BandCleaner(
        min_pixels=min_pixels, halo=min(min_pixels - 1, band_height), band_height=band_height, map_height=90
    )
    out = np.full_like(labels, 255)
    for index, top in enumerate(range(0, 90, band_height)):
        band = labels[top : top + band_height]
        for clean in cleaner.push(index, np.zeros((4, *band.shape)), band):
            out[clean.index * band_height : clean.index * band_height + clean.labels.shape[0]] = clean.labels
    for clean in cleaner.finish():
        out[clean.index * band_height :] = clean.labels
    assert np.array_equal(out, whole)
    assert not np.array_equal(whole, labels)  # specks were removed


def test_context_bands_lend_their_rows_and_are_not_handed_out() -> None:
    labels = _speckled_map((48, 30), seed=3)
    cleaner = BandCleaner(min_pixels=5, halo=4, band_height=16, map_height=48)
    handed = []
    for index in range(3):
        band = labels[16 * index : 16 * (index + 1)]
        handed += [c.index for c in cleaner.push(index, np.zeros((4, *band.shape)), band, context_only=index == 0)]
    handed += [c.index for c in cleaner.finish()]
    assert handed == [1, 2]


def test_bands_must_come_in_order() -> None:
    cleaner = BandCleaner(min_pixels=5, halo=2, band_height=4, map_height=16)
    list(cleaner.push(0, np.zeros((1, 4, 4)), np.ones((4, 4), np.uint8)))
    with pytest.raises(ValueError, match="band 2 pushed after band 0"):
        list(cleaner.push(2, np.zeros((1, 4, 4)), np.ones((4, 4), np.uint8)))
