"""The PCM and its CAM normalisation, on hand-made tensors whose answers are worked out by hand."""

from __future__ import annotations

import pytest
import torch

from histo_daen.models.pcm import (
    add_background_channel,
    normalise_cams,
    pcm_seed_cams,
    pixel_affinity,
    refine_cams,
    winner_take_all,
)


def test_normalise_cams_divides_by_the_channel_maximum_after_relu() -> None:
    cams = torch.tensor([[[[2.0, 1.0], [-3.0, 0.0]], [[-1.0, -2.0], [-0.5, -4.0]]]])  # (1, 2, 2, 2)
    normalised = normalise_cams(cams)
    eps = 1e-5
    expected_first = torch.tensor([[2.0 - eps, 1.0 - eps], [0.0, 0.0]]) / (2.0 + eps)
    torch.testing.assert_close(normalised[0, 0], expected_first)
    assert torch.equal(normalised[0, 1], torch.zeros(2, 2))  # an all-negative class has no evidence anywhere


def test_background_channel_is_one_minus_the_foreground_maximum() -> None:
    foreground = torch.tensor([[[[0.2, 0.9]], [[0.7, 0.1]]]])  # (1, 2, 1, 2)
    with_background = add_background_channel(foreground)
    assert with_background.shape == (1, 3, 1, 2)
    torch.testing.assert_close(with_background[0, 0], torch.tensor([[0.3, 0.1]]))
    assert torch.equal(with_background[:, 1:], foreground)


def test_winner_take_all_keeps_winner_values_and_ties_and_leaves_background() -> None:
    scores = torch.tensor([[[[0.5, 0.0]], [[0.4, 0.6]], [[0.3, 0.6]], [[0.1, 0.2]]]])  # (1, 1 + 3, 1, 2)
    original = scores.clone()
    kept = winner_take_all(scores)
    expected = torch.tensor([[[[0.5, 0.0]], [[0.4, 0.6]], [[0.0, 0.6]], [[0.0, 0.0]]]])
    assert torch.equal(kept, expected)  # pixel 0: class 1 wins with 0.4; pixel 1: classes 1 and 2 tie at 0.6
    assert torch.equal(scores, original)


def test_pcm_seed_composes_the_three_steps_without_gradient() -> None:
    cams = torch.tensor([[[[4.0, 1.0]], [[2.0, 2.0]]]], requires_grad=True)  # (1, 2, 1, 2)
    seed = pcm_seed_cams(cams)
    eps = 1e-5
    first = torch.tensor([4.0 - eps, 1.0 - eps]) / (4.0 + eps)  # class 1 normalised
    second = torch.tensor([2.0 - eps, 2.0 - eps]) / (2.0 + eps)  # class 2 normalised, ~1 everywhere
    torch.testing.assert_close(seed[0, 0, 0], 1 - torch.maximum(first, second))
    torch.testing.assert_close(seed[0, 1, 0], torch.tensor([first[0], 0.0]))  # class 1 loses pixel 1
    torch.testing.assert_close(seed[0, 2, 0], torch.tensor([0.0, second[1]]))  # class 2 loses pixel 0
    assert not seed.requires_grad


def test_pixel_affinity_is_column_normalised_relu_cosine() -> None:
    # Three pixels in a row: two point the same way, the third is orthogonal, so A = [[1,1,0],[1,1,0],[0,0,1]]
    # before normalising; column sums 2, 2, 1.
    embeddings = torch.tensor([[[[3.0, 1.0, 0.0]], [[0.0, 0.0, 2.0]]]])  # (1, D=2, 1, 3)
    affinity = pixel_affinity(embeddings)
    expected = torch.tensor([[[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]])
    torch.testing.assert_close(affinity, expected, atol=1e-4, rtol=0)


def test_pixel_affinity_clips_opposite_pixels_to_zero() -> None:
    embeddings = torch.tensor([[[[1.0, -1.0]]]])  # (1, 1, 1, 2): cosine -1 between the two pixels
    affinity = pixel_affinity(embeddings)
    torch.testing.assert_close(affinity, torch.eye(2).unsqueeze(0), atol=1e-4, rtol=0)


def test_refine_cams_propagates_scores_along_a_hand_made_affinity() -> None:
    affinity = torch.tensor([[[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]])
    cams = torch.tensor([[[[1.0, 0.0, 0.0]], [[0.0, 0.0, 0.8]]]])  # (1, 2, 1, 3)
    refined = refine_cams(cams, affinity)
    expected = torch.tensor([[[[0.5, 0.5, 0.0]], [[0.0, 0.0, 0.8]]]])  # pixel 1 inherits half of pixel 0's score
    torch.testing.assert_close(refined, expected)


@pytest.mark.parametrize("side", [28, 56])  # the CAM of a 224 patch and of a 448 crop
def test_refinement_at_patch_and_crop_resolution_keeps_constant_maps(side: int) -> None:
    embeddings = torch.randn(2, 16, side, side, generator=torch.Generator().manual_seed(2))
    affinity = pixel_affinity(embeddings)
    assert affinity.shape == (2, side * side, side * side)
    assert (affinity >= 0).all()
    torch.testing.assert_close(affinity.sum(dim=1), torch.ones(2, side * side), atol=1e-4, rtol=0)
    constant = torch.full((2, 3, side, side), 0.25)
    # Columns sum to 1, so each refined pixel is a weighted average: a constant map stays constant.
    torch.testing.assert_close(refine_cams(constant, affinity), constant, atol=1e-5, rtol=0)


def test_refine_cams_refuses_an_affinity_of_another_size() -> None:
    with pytest.raises(ValueError, match=r"affinity of shape \(1, 4, 4\) does not fit CAMs of shape \(1, 2, 3, 3\)"):
        refine_cams(torch.zeros(1, 2, 3, 3), torch.zeros(1, 4, 4))
