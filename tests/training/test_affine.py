from __future__ import annotations

import pytest
import torch

from histo_daen.config.schema import TwinConfig
from histo_daen.training.affine import TwinParams, TwinTransform


def _ramp(batch: int, side: int) -> torch.Tensor:
    """A field linear in x and y: bilinear resampling with align_corners=True reproduces it exactly."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, side), torch.linspace(0, 2, side), indexing="ij")
    return torch.stack([xs + 3 * ys, 2 * xs - ys]).expand(batch, 2, side, side).clone()


def test_seam_rescale_gives_floor_of_the_scaled_size() -> None:
    twin = TwinTransform(TwinConfig(scale=0.3))
    assert twin.output_hw((448, 448)) == (134, 134)  # SEAM: 448 * 0.3 = 134.4
    assert twin.apply(torch.rand(1, 3, 448, 448), TwinParams.identity(1)).shape == (1, 3, 134, 134)


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_inverse_undoes_every_flip_and_turn_exactly(mirror: bool, turns: int) -> None:
    twin = TwinTransform(TwinConfig(scale=1.0, flips=True, rotations=True))
    x = torch.rand(1, 5, 8, 8)
    params = TwinParams(mirrors=(mirror,), quarter_turns=(turns,))
    assert torch.equal(twin.invert(twin.apply(x, params), params, shape_hw=(8, 8)), x)


def test_transform_then_inverse_is_the_identity_with_rescale() -> None:
    twin = TwinTransform(TwinConfig(scale=0.5, flips=True, rotations=True))
    x = _ramp(4, 33)
    params = TwinParams(mirrors=(False, True, True, False), quarter_turns=(0, 1, 2, 3))
    small = twin.apply(x, params)
    assert small.shape == (4, 2, 16, 16)
    torch.testing.assert_close(twin.invert(small, params, shape_hw=(33, 33)), x, atol=1e-5, rtol=0)


def test_draw_is_keyed_by_seed_epoch_and_patch() -> None:
    twin = TwinTransform(TwinConfig(flips=True, rotations=True))
    first = twin.draw([0, 1, 2, 3, 4, 5, 6, 7], seed=0, epoch=0)
    assert twin.draw([0, 1, 2, 3, 4, 5, 6, 7], seed=0, epoch=0) == first
    assert twin.draw([4, 5], seed=0, epoch=0).quarter_turns == first.quarter_turns[4:6]  # independent of batching
    assert twin.draw([0, 1, 2, 3, 4, 5, 6, 7], seed=0, epoch=1) != first
    assert len(set(first.quarter_turns)) > 1


def test_rescale_only_config_draws_the_identity() -> None:
    assert TwinTransform(TwinConfig(scale=0.3)).draw([3, 9], seed=1, epoch=2).is_identity


def test_apply_refuses_turns_of_non_square_patches() -> None:
    twin = TwinTransform(TwinConfig(scale=1.0, rotations=True))
    with pytest.raises(ValueError, match="quarter turns need square patches"):
        twin.apply(torch.rand(1, 3, 8, 6), TwinParams(mirrors=(False,), quarter_turns=(1,)))
