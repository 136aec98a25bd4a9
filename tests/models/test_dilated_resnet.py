"""Dilated torchvision ResNets: torchvision's parameter names, torchvision's dilation rule, output stride 8."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from histo_daen.models.dilated_resnet import DilatedResNet


@pytest.mark.parametrize("depth", [18, 50])
def test_state_dict_matches_torchvision_without_fc(depth: int) -> None:
    ours = DilatedResNet(depth=depth).state_dict()
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None).state_dict()
    expected = {k: tuple(v.shape) for k, v in reference.items() if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in ours.items()} == expected


def test_resnet50_features_equal_torchvision_replace_stride_with_dilation() -> None:
    reference = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True]).eval()
    ours = DilatedResNet(depth=50).eval()
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = ours.forward_features(x)
        stem = reference.layer1(reference.maxpool(reference.relu(reference.bn1(reference.conv1(x)))))
        layer2 = reference.layer2(stem)
        layer3 = reference.layer3(layer2)
        layer4 = reference.layer4(layer3)
    torch.testing.assert_close(features.conv4, layer2)
    torch.testing.assert_close(features.conv5, layer3)
    torch.testing.assert_close(features.conv6, layer4)
    assert (features.conv6_pre_relu < 0).any()  # before the last ReLU, unlike layer4's output


def test_resnet18_is_dilated_by_the_same_rule() -> None:
    net = DilatedResNet(depth=18)
    first, second = net.layer3
    assert first.conv1.stride == (1, 1) and first.downsample[0].stride == (1, 1)
    # The conv where the stride was keeps the previous dilation; the later 3x3 convs take the new one.
    assert (first.conv1.dilation, first.conv2.dilation, second.conv1.dilation) == ((1, 1), (2, 2), (2, 2))
    assert (net.layer4[0].conv1.dilation, net.layer4[1].conv2.dilation) == ((2, 2), (4, 4))
    assert net.layer4[1].conv2.padding == (4, 4)


@pytest.mark.parametrize(("depth", "width", "channels"), [(18, 0.25, (32, 64, 128)), (50, 0.125, (64, 128, 256))])
def test_reduced_width_features_at_output_stride_8(depth: int, width: float, channels: tuple[int, int, int]) -> None:
    net = DilatedResNet(depth=depth, width=width).eval()
    with torch.no_grad():
        features = net.forward_features(torch.rand(2, 3, 72, 64))
    assert features.conv4.shape == (2, channels[0], 9, 8)
    assert features.conv5.shape == (2, channels[1], 9, 8)
    assert features.conv6_pre_relu.shape == (2, channels[2], 9, 8)
    assert net.feature_channels == dict(zip(("conv4", "conv5", "conv6"), channels, strict=True))


def test_resnet18_conv6_is_layer4_output() -> None:
    net = DilatedResNet(depth=18, width=0.25).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        features = net.forward_features(x)
        layer4 = net.layer4(features.conv5)
    torch.testing.assert_close(features.conv6, layer4)
    torch.testing.assert_close(F.relu(features.conv6_pre_relu), net(x))


def test_unknown_depth_is_refused() -> None:
    with pytest.raises(ValueError, match=r"depth must be one of \[18, 50\], got 34"):
        DilatedResNet(depth=34)  # type: ignore[arg-type]
