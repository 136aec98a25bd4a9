"""Each loss on tensors small enough to compute by hand (reference.md §3.3)."""

from __future__ import annotations

import math

import pytest
import torch

from histo_daen.training.losses import (
    classification_loss,
    cross_equivariant_loss,
    equivariant_loss,
    max_norm,
    rebuild_background,
    rvmin_loss,
    winner_take_all,
    with_background_label,
)


def test_classification_loss_is_log2_at_zero_logits() -> None:
    loss = classification_loss(torch.zeros(2, 4), torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]]))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_classification_loss_averages_the_soft_margin_over_classes() -> None:
    # One patch, two classes: present class scored 2, absent class scored 0.
    loss = classification_loss(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    expected = (-math.log(1 / (1 + math.exp(-2.0))) + math.log(2)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_max_norm_maps_each_channel_min_to_zero_and_max_to_one() -> None:
    cams = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]], [[-3.0, -1.0], [1.0, 3.0]]]])  # (1, 2, 2, 2)
    out = max_norm(cams)
    # Channel 0: min 0, max 4. Channel 1 after ReLU: [0, 0, 1, 3], min 0, max 3.
    assert out[0, 0].flatten().tolist() == pytest.approx([0.0, 0.25, 0.5, 1.0], abs=1e-4)
    assert out[0, 1].flatten().tolist() == pytest.approx([0.0, 0.0, 1 / 3, 1.0], abs=1e-4)


def test_winner_take_all_keeps_the_winner_value_and_ties_and_leaves_background() -> None:
    cams = torch.tensor([0.75, 0.25, 0.5, 0.5]).reshape(1, 4, 1, 1)  # exact binary fractions
    assert winner_take_all(cams).flatten().tolist() == [0.75, 0.0, 0.5, 0.5]
    assert cams.flatten().tolist() == [0.75, 0.25, 0.5, 0.5]  # input untouched (SEAM's max_onehot works in place)


def test_rebuild_background_is_one_minus_the_foreground_maximum() -> None:
    cams = torch.tensor([5.0, 0.2, 0.7]).reshape(1, 3, 1, 1)
    assert rebuild_background(cams).flatten().tolist() == pytest.approx([0.3, 0.2, 0.7])


def test_with_background_label_prepends_a_constant_one() -> None:
    assert with_background_label(torch.tensor([[0.0, 1.0]])).flatten().tolist() == [1.0, 0.0, 1.0]


def test_equivariant_loss_is_the_mean_absolute_foreground_difference() -> None:
    first = torch.tensor([9.0, 0.2, 0.4]).reshape(1, 3, 1, 1)  # channel 0 (background) is ignored
    second = torch.tensor([0.0, 0.5, 0.4]).reshape(1, 3, 1, 1)
    assert equivariant_loss(first, second).item() == pytest.approx(0.15)


def test_cross_equivariant_loss_averages_the_top_fifth_with_k_from_the_real_channel_count() -> None:
    # C = 5 channels (LUAD: background + 4) on 2 x 2: C*h*w = 20 entries, k = int(20 * 0.2) = 4.
    refined = (torch.arange(1, 21, dtype=torch.float32) / 20).reshape(1, 5, 2, 2)
    other = torch.zeros(1, 5, 2, 2)  # winner-take-all of zeros is zeros: the errors are the refined values
    loss = cross_equivariant_loss(other, refined, top_fraction=0.2)
    assert loss.item() == pytest.approx((20 + 19 + 18 + 17) / 4 / 20)
    # SEAM's hard-coded 21 channels would ask for int(21 * 4 * 0.2) = 16 entries: a different (wrong) average.
    assert loss.item() != pytest.approx(sum(range(5, 21)) / 16 / 20)


def test_cross_equivariant_loss_compares_with_the_winner_take_all_of_the_other_branch() -> None:
    other = torch.tensor([0.1, 0.8, 0.3]).reshape(1, 3, 1, 1)  # wta -> [0.1, 0.8, 0.0]
    refined = torch.tensor([0.1, 0.8, 0.3]).reshape(1, 3, 1, 1)
    loss = cross_equivariant_loss(other, refined, top_fraction=1.0)  # k = 3: the plain mean
    assert loss.item() == pytest.approx(0.3 / 3)


def test_cross_equivariant_loss_does_not_train_the_other_branch() -> None:
    other = torch.rand(1, 3, 2, 2, requires_grad=True)
    refined = torch.rand(1, 3, 2, 2, requires_grad=True)
    cross_equivariant_loss(other, refined).backward()
    assert other.grad is None and refined.grad is not None


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([1.0, 1.0], 2.0),  # per-pixel max over both: [4, 2, 3, 4]; the smallest quarter (k = 1) is 2
        ([1.0, 0.0], 1.0),  # only channel 0: [1, 2, 3, 4] -> 1
        ([0.0, 1.0], 0.0),  # only channel 1: [4, 0, 0, -1] -> -1, and ReLU makes it 0
    ],
)
def test_rvmin_loss_pushes_the_smallest_quarter_of_the_masked_maximum(labels: list[float], expected: float) -> None:
    refined = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[4.0, 0.0], [0.0, -1.0]]]])  # (1, 2, 2, 2)
    assert rvmin_loss(refined, torch.tensor([labels]), fraction=0.25).item() == pytest.approx(expected)


def test_rvmin_loss_averages_over_the_batch() -> None:
    refined = torch.stack([torch.full((1, 2, 2), 2.0), torch.full((1, 2, 2), 4.0)])  # (2, 1, 2, 2)
    assert rvmin_loss(refined, torch.ones(2, 1), fraction=0.5).item() == pytest.approx((2 * 2 + 4 * 2) / (2 * 2))
