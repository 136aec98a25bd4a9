"""tissue_mask: glass vs tissue on thumbnails; pale stroma kept; pen ink, dust and specks dropped; holes filled."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from histo_daen.data.synthetic_slide import SyntheticSlide
from histo_daen.data.synthetic_tissue import GLASS_INDEX, TissueAppearance, TissueStyle, render_tissue
from histo_daen.slide import open_slide
from histo_daen.tiling import pen_mask, tissue_mask


def _glass(shape_hw: tuple[int, int], level: int = 240) -> np.ndarray:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 2.0, (*shape_hw, 3))
    return np.clip(level + noise, 0, 255).astype(np.uint8)


def test_blank_glass_has_no_tissue() -> None:
    assert not tissue_mask(_glass((64, 64))).any()


def test_stained_square_on_glass_is_found_exactly() -> None:
    thumbnail = _glass((80, 80))
    thumbnail[20:60, 20:60] = (200, 120, 190)  # eosin-pink
    mask = tissue_mask(thumbnail, thumbnail_mpp=8.0)
    expected = np.zeros((80, 80), dtype=bool)
    expected[20:60, 20:60] = True
    np.testing.assert_array_equal(mask, expected)


def test_pale_stroma_is_kept() -> None:
    # Stroma with a third of the usual eosin, rendered at 2 um/px and shrunk to an 8 um/px thumbnail.
    labels = np.full((512, 512), GLASS_INDEX)
    labels[128:384, 128:384] = 3  # TAS
    pale = TissueAppearance(seed=5, eosin_amount=0.3, haematoxylin_amount=0.4)
    rgb = render_tissue(labels, mpp=2.0, rng=np.random.default_rng(0), appearance=pale, style=TissueStyle(noise=2.0))
    thumbnail = np.asarray(Image.fromarray(rgb).resize((128, 128), Image.Resampling.BOX))
    stroma = thumbnail[36:92, 36:92].reshape(-1, 3)
    assert stroma.mean() > 200  # nearly as bright as the glass (240): brightness alone would miss it
    mask = tissue_mask(thumbnail, thumbnail_mpp=8.0)
    assert mask[34:94, 34:94].mean() > 0.98
    assert not mask[:28].any() and not mask[100:].any()


@pytest.mark.parametrize(("ink", "name"), [((40, 70, 180), "blue"), ((30, 140, 60), "green"), ((25, 25, 30), "black")])
def test_pen_strokes_on_glass_are_not_tissue(ink: tuple[int, int, int], name: str) -> None:
    thumbnail = _glass((80, 80))
    thumbnail[10:14, 5:75] = ink  # a stroke 4 px wide, 70 long: bigger than any dust limit
    assert pen_mask(thumbnail)[11, 40], name
    assert not tissue_mask(thumbnail, thumbnail_mpp=8.0).any(), name


def test_haematoxylin_purple_is_not_taken_for_blue_ink() -> None:
    thumbnail = _glass((60, 60))
    thumbnail[10:50, 10:50] = (110, 85, 160)  # dense lymphocytes at thumbnail scale
    assert not pen_mask(thumbnail)[30, 30]
    assert tissue_mask(thumbnail, thumbnail_mpp=8.0)[30, 30]


def test_specks_smaller_than_the_dust_limit_are_dropped() -> None:
    thumbnail = _glass((80, 80))
    thumbnail[40:43, 40:43] = (200, 120, 190)  # 24 um across: a speck
    assert not tissue_mask(thumbnail, thumbnail_mpp=8.0).any()


def test_small_holes_in_tissue_are_filled() -> None:
    thumbnail = _glass((80, 80))
    thumbnail[10:70, 10:70] = (200, 120, 190)
    thumbnail[38:42, 38:42] = 240  # a gland lumen, 32 um across
    assert tissue_mask(thumbnail, thumbnail_mpp=8.0)[40, 40]


def test_rejects_a_grey_or_float_thumbnail() -> None:
    with pytest.raises(ValueError, match=r"expected an \(h, w, 3\) uint8 thumbnail"):
        tissue_mask(np.zeros((8, 8), dtype=np.uint8))


def _thumbnail_and_truth(slide: SyntheticSlide) -> tuple[np.ndarray, np.ndarray]:
    with open_slide(slide.path) as opened:
        thumbnail = opened.downsampled(slide.mask_downsample)  # 8 um/px, the mask's own grid
    return thumbnail, slide.read_mask() > 0


def test_mask_matches_the_ground_truth_of_a_synthetic_slide(tiny_slide: SyntheticSlide) -> None:
    thumbnail, truth = _thumbnail_and_truth(tiny_slide)
    mask = tissue_mask(thumbnail, thumbnail_mpp=8.0)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.95


@pytest.mark.slow
def test_pen_marks_and_dust_do_not_change_the_mask(marked_slide_pair: tuple[SyntheticSlide, SyntheticSlide]) -> None:
    clean, marked = marked_slide_pair
    clean_thumbnail, truth = _thumbnail_and_truth(clean)
    marked_thumbnail, _ = _thumbnail_and_truth(marked)
    ink_or_dust = np.abs(marked_thumbnail.astype(int) - clean_thumbnail.astype(int)).max(axis=2) > 30
    # Marks on glass, two pixels or more from the tissue (a speck on the tissue border is tissue-coloured there).
    on_glass = ink_or_dust & ~ndimage.binary_dilation(truth, iterations=2)
    assert on_glass.sum() > 200  # the marks are really there
    mask = tissue_mask(marked_thumbnail, thumbnail_mpp=8.0)
    assert not (mask & on_glass).any()
    clean_mask = tissue_mask(clean_thumbnail, thumbnail_mpp=8.0)
    assert (mask != clean_mask).mean() < 0.002
