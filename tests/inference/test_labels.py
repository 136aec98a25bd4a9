"""The CAM -> label-map rule on hand-made CAMs and images whose answer is known pixel by pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from histo_daen.classes import LUAD
from histo_daen.config.schema import InferenceConfig
from histo_daen.data.masks import write_mask
from histo_daen.evaluation.metrics import confusion_matrix, scores
from histo_daen.inference.labels import cams_to_label_map, describe_label_map, white_glass_mask

NO_WHITE = InferenceConfig(white_exclude=False)
WHITE = InferenceConfig(white_exclude=True)


def _stained(shape_hw: tuple[int, int], batch: int = 1) -> torch.Tensor:
    """(B, 3, H, W) pinkish tissue colour, grey level about 150: never white."""
    colour = torch.tensor([0.8, 0.5, 0.7])[None, :, None, None]
    return colour.expand(batch, 3, *shape_hw).clone()


def test_label_is_argmax_over_tissue_classes() -> None:
    cams = torch.zeros(1, 4, 2, 2)
    cams[0, 0, 0, 0] = 0.9  # TE top-left
    cams[0, 3, 0, 1] = 0.8  # TAS top-right
    cams[0, 2, 1, :] = 0.7  # LYM bottom row
    labels = cams_to_label_map(cams, None, settings=NO_WHITE)
    assert labels.dtype == torch.uint8
    assert labels[0].tolist() == [[0, 3], [2, 2]]


def test_classes_not_allowed_never_win_even_where_all_cams_are_zero() -> None:
    cams = torch.zeros(1, 4, 1, 3)
    cams[0, 2, 0, 0] = 1.0
    allowed = torch.tensor([[False, False, True, True]])
    labels = cams_to_label_map(cams, None, settings=NO_WHITE, labels_used=allowed)
    assert labels[0, 0].tolist() == [2, 2, 2]  # zero pixels take the first allowed class (LYM), not TE


def test_background_alpha_labels_weak_pixels_exclude() -> None:
    cams = torch.tensor([[[[0.1, 0.5, 0.26]]], [[[0.0, 0.0, 0.0]]]]).expand(2, 4, 1, 3).clone()
    cams[:, 1:] = 0.0  # only TE scores
    labels = cams_to_label_map(cams, None, settings=InferenceConfig(white_exclude=False, background_alpha=0.26))
    assert labels[0, 0].tolist() == [4, 0, 4]  # at or below alpha -> exclude (SEAM: ties go to background)


def test_competing_background_map_wins_where_it_is_higher() -> None:
    cams = torch.zeros(1, 4, 1, 2)
    cams[0, 1] = 0.5
    background = torch.tensor([[[[0.7, 0.2]]]])
    labels = cams_to_label_map(cams, None, settings=NO_WHITE, background=background)
    assert labels[0, 0].tolist() == [4, 1]


def test_white_glass_needs_a_large_enough_white_component() -> None:
    images = _stained((16, 16))
    images[0, :, 0:10, 0:10] = 1.0  # 100 px of glass -> exclude
    images[0, :, 12:15, 12:15] = 1.0  # 9 px white speck -> stays tissue
    glass = white_glass_mask(images)
    assert glass[0, 0:10, 0:10].all()
    assert not glass[0, 12:15, 12:15].any()
    assert int(glass.sum()) == 100


def test_white_glass_components_are_four_connected() -> None:
    # Two 5x5 white squares touching only at a corner: 25 px each, 50 together if 8-connected.
    images = _stained((12, 12))
    images[0, :, 0:5, 0:5] = 1.0
    images[0, :, 5:10, 5:10] = 1.0
    assert not white_glass_mask(images, min_pixels=50).any()
    assert int(white_glass_mask(images, min_pixels=25).sum()) == 50


def test_white_glass_threshold_is_on_the_grey_level() -> None:
    images = torch.full((1, 3, 10, 10), 200 / 255)  # grey exactly 200: not above the threshold
    assert not white_glass_mask(images).any()
    images = torch.full((1, 3, 10, 10), 201 / 255)
    assert white_glass_mask(images).all()


def test_white_glass_becomes_exclude_in_the_label_map() -> None:
    images = _stained((10, 10))
    images[0, :, :, :6] = 1.0  # 60 px glass on the left
    cams = torch.zeros(1, 4, 10, 10)
    cams[0, 3] = 1.0
    labels = cams_to_label_map(cams, images, settings=WHITE)
    assert (labels[0, :, :6] == 4).all()
    assert (labels[0, :, 6:] == 3).all()


def test_white_rule_without_images_is_refused() -> None:
    with pytest.raises(ValueError, match="white_exclude needs the images"):
        cams_to_label_map(torch.zeros(1, 4, 2, 2), None, settings=WHITE)


def test_scoring_default_is_argmax_over_the_classes_without_exclude() -> None:
    assert not InferenceConfig().white_exclude and InferenceConfig().background_alpha is None
    images = torch.ones(1, 3, 8, 8)  # all white: the white rule would exclude every pixel
    cams = torch.zeros(1, 4, 8, 8)
    cams[0, 2] = 0.01  # a weak LYM score still wins the argmax
    labels = cams_to_label_map(cams, images, settings=InferenceConfig())
    assert (labels == 2).all()
    assert describe_label_map(InferenceConfig()).endswith("nothing is labelled exclude")
    assert "white glass (grey level > 200" in describe_label_map(WHITE)


def test_white_rule_turns_pale_tissue_into_misses_when_scored() -> None:
    # TAS with white alveolar spaces that its mask calls TAS (as annotators do), TE in the top-left quarter.
    images = _stained((16, 16))
    images[0, :, :, 12:] = 1.0  # columns 12-15: white, all TAS in the mask (64 px, one component)
    truth = np.full((1, 16, 16), 3, dtype=np.int64)  # TAS everywhere ...
    truth[0, :8, :8] = 0  # ... but TE in the top-left quarter
    cams = torch.zeros(1, 4, 16, 16)
    cams[0, 3] = 0.9
    cams[0, 0, :8, :8] = 1.0  # perfect CAMs
    argmax = cams_to_label_map(cams, images, settings=NO_WHITE).numpy()
    excluded = cams_to_label_map(cams, images, settings=WHITE).numpy()
    assert scores(confusion_matrix(truth, argmax)).miou == 1.0
    assert (excluded[0, :, 12:] == 4).all() and (excluded[0, :, :12] == argmax[0, :, :12]).all()
    with_rule = scores(confusion_matrix(truth, excluded))
    # TAS: 256 - 64 TE = 192 px, 64 of them white -> IoU 128 / 192; TE untouched.
    assert with_rule.iou[0] == 1.0
    assert with_rule.iou[3] == pytest.approx(128 / 192)


def test_label_map_round_trips_through_a_palette_png(tmp_path: Path) -> None:
    cams = torch.zeros(1, 4, 4, 4)
    cams[0, 1, :2] = 1.0  # NEC top half, TE bottom (all-zero pixels, TE allowed)
    cams[0, 0, 2:] = 0.5
    images = _stained((4, 4))
    labels = cams_to_label_map(cams, images, settings=InferenceConfig(white_exclude=True, background_alpha=0.6))
    mask = labels[0].numpy()
    assert set(np.unique(mask).tolist()) == {1, 4}
    mask[0, 0] = 0  # a mask holding 0, 1 and 4: Pillow re-packs such indices without the full palette
    path = write_mask(tmp_path / "mask.png", mask, LUAD)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.getpalette()[3 * 4 : 3 * 5] == [255, 255, 255]
        assert image.getpalette()[0:3] == [205, 51, 51]
        np.testing.assert_array_equal(np.asarray(image), mask)
