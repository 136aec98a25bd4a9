from __future__ import annotations

import numpy as np
import pytest
import torch

from histo_daen.config.schema import AugmentConfig
from histo_daen.data.transforms import AugmentParams, PatchAugment, apply_dihedral, hed_jitter, resize_patch


def _coordinate_image(side: int = 6) -> np.ndarray:
    """Channel 0 = row, channel 1 = column: where every pixel came from stays readable after any flip/turn."""
    rows, cols = np.mgrid[0:side, 0:side]
    return np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("quarter_turns", [0, 1, 2, 3])
@pytest.mark.parametrize("mirror", [False, True])
def test_geometry_moves_image_and_mask_together(quarter_turns: int, mirror: bool) -> None:
    image = _coordinate_image()
    mask = (image[..., 0] * 10 + image[..., 1]).astype(np.int64)  # a mask that encodes the same coordinates
    augment = PatchAugment(AugmentConfig(colour="none"))
    out_image, out_mask = augment.apply(image, mask, AugmentParams(quarter_turns=quarter_turns, mirror=mirror))
    assert out_mask is not None
    assert np.array_equal(out_mask, out_image[..., 0].astype(np.int64) * 10 + out_image[..., 1])
    assert sorted(out_mask.ravel().tolist()) == sorted(mask.ravel().tolist())  # a permutation of the pixels


def test_apply_dihedral_turns_counter_clockwise_after_mirroring() -> None:
    array = np.array([[1, 2], [3, 4]])
    assert apply_dihedral(array, quarter_turns=1, mirror=False).tolist() == [[2, 4], [1, 3]]
    assert apply_dihedral(array, quarter_turns=0, mirror=True).tolist() == [[2, 1], [4, 3]]


def test_augment_does_not_modify_its_inputs() -> None:
    image = _coordinate_image()
    mask = image[..., 0].copy()
    before_image, before_mask = image.copy(), mask.copy()
    PatchAugment(AugmentConfig(colour="jitter"))(image, mask, np.random.default_rng(3))
    assert np.array_equal(image, before_image) and np.array_equal(mask, before_mask)


def test_colour_augmentation_changes_the_image_but_never_the_mask() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, size=(8, 8, 3), dtype=np.uint8)
    mask = rng.integers(0, 5, size=(8, 8))
    for colour in ("hed", "jitter"):
        augment = PatchAugment(AugmentConfig(flips=False, rotations=False, colour=colour))
        out_image, out_mask = augment(image, mask, np.random.default_rng(1))
        assert out_mask is not None and np.array_equal(out_mask, mask)
        assert not np.array_equal(out_image, image)


def test_hed_jitter_with_neutral_parameters_keeps_the_image() -> None:
    image = np.random.default_rng(0).integers(30, 250, size=(6, 6, 3), dtype=np.uint8)
    out = hed_jitter(image, np.ones(3), np.zeros(3))
    assert np.abs(out.astype(int) - image.astype(int)).max() <= 1  # float round trip through stain space


def test_same_generator_seed_gives_the_same_augmentation() -> None:
    image = np.random.default_rng(0).integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
    augment = PatchAugment(AugmentConfig())
    first, _ = augment(image, None, np.random.default_rng([0, 1, 2]))
    again, _ = augment(image, None, np.random.default_rng([0, 1, 2]))
    assert np.array_equal(first, again)


def test_resize_patch_scales_image_bilinearly_and_mask_by_nearest() -> None:
    image = torch.rand(3, 4, 4)
    mask = torch.tensor([[0, 0, 4, 4]] * 4)
    big_image, big_mask = resize_patch(image, mask, 2.0)
    assert big_image.shape == (3, 8, 8) and big_image.min() >= 0 and big_image.max() <= 1
    assert big_mask is not None and big_mask.shape == (8, 8) and set(big_mask.unique().tolist()) == {0, 4}
    assert big_mask[:, :4].eq(0).all() and big_mask[:, 4:].eq(4).all()
