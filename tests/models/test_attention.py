"""Channel and spatial attention, the CSM and its CM/SM ablations: ranges, composition, pooling, parameter counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from histo_daen.models.attention import ChannelAttention, ChannelSpatialAttention, SpatialAttention


@pytest.fixture
def features() -> torch.Tensor:
    """(2, 32, 6, 5) float with both signs, like bn7's output before its ReLU."""
    return 3 * torch.randn(2, 32, 6, 5, generator=torch.Generator().manual_seed(1))


def test_channel_attention_weights_are_per_channel_and_in_open_unit_interval(features: torch.Tensor) -> None:
    weights = ChannelAttention(32, reduction=16)(features)
    assert weights.shape == (2, 32, 1, 1)
    assert (weights > 0).all() and (weights < 1).all()


def test_spatial_attention_weights_are_per_pixel_and_in_open_unit_interval(features: torch.Tensor) -> None:
    weights = SpatialAttention(kernel_size=7)(features)
    assert weights.shape == (2, 1, 6, 5)
    assert (weights > 0).all() and (weights < 1).all()


def test_channel_attention_shares_one_mlp_between_average_and_max(features: torch.Tensor) -> None:
    attention = ChannelAttention(32, reduction=4)
    mlp = attention.mlp
    expected = torch.sigmoid(mlp(features.mean((2, 3), keepdim=True)) + mlp(features.amax((2, 3), keepdim=True)))
    torch.testing.assert_close(attention(features), expected)
    assert mlp[0].out_channels == 8 and mlp[0].bias is None


def test_csm_equals_relu_of_spatial_times_channel_weighted_features(features: torch.Tensor) -> None:
    csm = ChannelSpatialAttention(32, reduction=4)
    channel_weighted = csm.channel_attention(features) * features  # Ca(f) * f
    expected = F.relu(csm.spatial_attention(channel_weighted) * channel_weighted)
    out = csm(features)
    torch.testing.assert_close(out, expected)
    assert (out >= 0).all() and out.shape == features.shape


def test_cm_and_sm_use_one_attention_each(features: torch.Tensor) -> None:
    cm = ChannelSpatialAttention(32, reduction=4, use_spatial=False)
    sm = ChannelSpatialAttention(32, use_channel=False)
    assert cm.spatial_attention is None and sm.channel_attention is None
    torch.testing.assert_close(cm(features), F.relu(cm.channel_attention(features) * features))
    torch.testing.assert_close(sm(features), F.relu(sm.spatial_attention(features) * features))


def test_concat_and_sum_pooling_agree_with_centre_only_kernels(features: torch.Tensor) -> None:
    # With a kernel that only reads the centre pixel, concat with weights (1, 1) and sum with weight 1 both give
    # sigmoid(mean_c + max_c): the two options differ only in what the conv can learn.
    concat, summed = SpatialAttention(pooling="concat"), SpatialAttention(pooling="sum")
    with torch.no_grad():
        for module in (concat, summed):
            module.conv.weight.zero_()
            module.conv.weight[:, :, 3, 3] = 1.0
    expected = torch.sigmoid(features.mean(1, keepdim=True) + features.amax(1, keepdim=True))
    torch.testing.assert_close(concat(features), expected)
    torch.testing.assert_close(summed(features), expected)
    assert (concat.conv.in_channels, summed.conv.in_channels) == (2, 1)


def test_csm_on_4096_channels_has_the_reference_parameter_count() -> None:
    # reference.md 1.2 / 4.2: shared MLP 4096 -> 256 -> 4096 (2,097,152) + 7x7 conv 2 -> 1 (98), no biases.
    csm = ChannelSpatialAttention(4096, reduction=16, kernel_size=7)
    assert sum(p.numel() for p in csm.parameters()) == 2_097_250
    summed = ChannelSpatialAttention(4096, pooling="sum")
    assert sum(p.numel() for p in summed.parameters()) == 2_097_152 + 49


def test_small_channel_counts_keep_a_hidden_width_of_one() -> None:
    assert ChannelAttention(8, reduction=16).mlp[0].out_channels == 1


def test_kernel_3_keeps_the_map_size(features: torch.Tensor) -> None:
    assert SpatialAttention(kernel_size=3)(features).shape == (2, 1, 6, 5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"use_channel": False, "use_spatial": False}, "needs channel or spatial attention"),
        ({"kernel_size": 5}, "kernel_size must be 3 or 7, got 5"),
        ({"pooling": "mean"}, "pooling must be 'concat' or 'sum'"),
    ],
)
def test_invalid_options_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChannelSpatialAttention(16, **kwargs)  # type: ignore[arg-type]


def test_residual_form_never_takes_features_below_themselves(features: torch.Tensor) -> None:
    csm = ChannelSpatialAttention(32, reduction=4, form="residual")
    channel_weighted = (1 + csm.channel_attention(features)) * features
    expected = F.relu((1 + csm.spatial_attention(channel_weighted)) * channel_weighted)
    torch.testing.assert_close(csm(features), expected)
    positive = features.clamp(min=0)
    assert (csm(features) >= positive).all()  # every multiplier is in (1, 2)
    assert (csm(features) <= 4 * positive).all()


def _saturating_weights(spatial: SpatialAttention) -> None:
    """Spatial logits of about -50 on near-constant features: a plain sigmoid gives 0 (the gate is off)."""
    with torch.no_grad():
        spatial.conv.weight.zero_()
        spatial.conv.weight[0, 0, 3, 3] = -5.0  # the centre tap of the channel-mean map


def _near_constant() -> torch.Tensor:
    return 10 + 0.3 * torch.randn(2, 32, 6, 5, generator=torch.Generator().manual_seed(2))


def test_centred_weights_average_one_half_whatever_the_weights() -> None:
    spatial, channel = SpatialAttention(), ChannelAttention(32, reduction=4)
    _saturating_weights(spatial)
    with torch.no_grad():
        assert spatial(_near_constant()).max() < 1e-12  # plain: switched off
        centred = spatial(_near_constant(), centred=True)
        assert 0.3 < float(centred.mean()) < 0.7 and float(centred.std()) > 0.01  # centred: still weighing pixels
        logits = torch.logit(channel(_near_constant(), centred=True).double())
    torch.testing.assert_close(logits.mean(dim=1), torch.zeros(2, 1, 1, dtype=torch.float64), atol=1e-4, rtol=0)


def test_residual_centred_form_keeps_a_gradient_where_the_residual_form_has_none() -> None:
    gradients = {}
    for form in ("residual", "residual_centred"):
        csm = ChannelSpatialAttention(32, reduction=4, form=form)
        _saturating_weights(csm.spatial_attention)
        csm(_near_constant()).sum().backward()
        gradients[form] = float(csm.spatial_attention.conv.weight.grad.abs().sum())
    assert gradients["residual"] < 1e-6 < gradients["residual_centred"]


def test_unknown_form_is_refused() -> None:
    with pytest.raises(ValueError, match="form must be one of reference, residual, residual_centred"):
        ChannelSpatialAttention(8, form="centred")  # type: ignore[arg-type]
