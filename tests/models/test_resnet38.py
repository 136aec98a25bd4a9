"""ResNet38: the exact layout, SEAM's parameter names, the reference parameter count, stride-8 named features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from histo_daen.models.resnet38 import ResNet38, scaled_channels


@pytest.fixture(scope="module")
def full_resnet38() -> ResNet38:
    """The published width; built (about 1 s) for counting and layout only, never run forward."""
    return ResNet38(width=1.0)


def test_full_width_parameter_count_matches_reference(full_resnet38: ResNet38) -> None:
    # reference.md section 1.2: conv weights + BN gamma/beta = 105,070,912; running mean/var = 47,744.
    assert sum(p.numel() for p in full_resnet38.parameters()) == 105_070_912
    running = sum(
        b.numel() for name, b in full_resnet38.named_buffers() if name.endswith(("running_mean", "running_var"))
    )
    assert running == 47_744


def test_state_dict_holds_the_191_seam_backbone_tensors(full_resnet38: ResNet38) -> None:
    # reference.md 1.4: 43 conv weights + 37 BatchNorms x (weight, bias, running_mean, running_var).
    keys = [k for k in full_resnet38.state_dict() if not k.endswith("num_batches_tracked")]
    assert len(keys) == 191
    assert sum(k.endswith("weight") and "conv" in k for k in keys) == 43
    assert sum(k.endswith("running_var") for k in keys) == 37


@pytest.mark.parametrize(
    ("key", "shape"),
    [
        ("conv1a.weight", (64, 3, 3, 3)),
        ("b2.bn_branch2a.weight", (64,)),
        ("b2.conv_branch2a.weight", (128, 64, 3, 3)),
        ("b2.conv_branch1.weight", (128, 64, 1, 1)),
        ("b4_5.bn_branch2b1.running_var", (512,)),
        ("b5.conv_branch1.weight", (1024, 512, 1, 1)),
        ("b5_2.conv_branch2b1.weight", (1024, 512, 3, 3)),
        ("b6.conv_branch2a.weight", (512, 1024, 1, 1)),
        ("b6.conv_branch2b1.weight", (1024, 512, 3, 3)),
        ("b6.conv_branch2b2.weight", (2048, 1024, 1, 1)),
        ("b7.bn_branch2b2.running_mean", (2048,)),
        ("b7.conv_branch2b2.weight", (4096, 2048, 1, 1)),
        ("b7.conv_branch1.weight", (4096, 2048, 1, 1)),
        ("bn7.weight", (4096,)),
    ],
)
def test_parameter_names_and_shapes_follow_seam(full_resnet38: ResNet38, key: str, shape: tuple[int, ...]) -> None:
    assert tuple(full_resnet38.state_dict()[key].shape) == shape


def test_identity_shortcuts_have_no_projection(full_resnet38: ResNet38) -> None:
    keys = full_resnet38.state_dict()
    for block in ("b2_1", "b3_2", "b4_3", "b5_1"):
        assert f"{block}.conv_branch1.weight" not in keys


def test_dilations_and_dropout_follow_the_layer_table(full_resnet38: ResNet38) -> None:
    net = full_resnet38
    assert net.b4.conv_branch2a.stride == (2, 2)
    assert (net.b5.conv_branch2a.dilation, net.b5.conv_branch2b1.dilation) == ((1, 1), (2, 2))
    assert (net.b5_2.conv_branch2a.dilation, net.b5_2.conv_branch2b1.dilation) == ((2, 2), (2, 2))
    assert net.b6.conv_branch2b1.dilation == (4, 4) and net.b6.conv_branch2b1.padding == (4, 4)
    assert net.b7.conv_branch2b1.dilation == (4, 4)
    assert (net.b6.dropout_2b1.p, net.b6.dropout_2b2.p, net.b7.dropout_2b1.p) == (0.3, 0.3, 0.5)
    assert isinstance(net.b7.dropout_2b2, nn.Dropout2d)
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(("size", "expected"), [(64, 8), (70, 9), (96, 12)])
def test_features_have_output_stride_8(size: int, expected: int) -> None:
    net = ResNet38(width=0.0625).eval()
    with torch.no_grad():
        features = net.forward_features(torch.rand(1, 3, size, size))
    assert features.conv4.shape == (1, 32, expected, expected)  # 512 / 16
    assert features.conv5.shape == (1, 64, expected, expected)  # 1024 / 16
    assert features.conv6_pre_relu.shape == (1, 256, expected, expected)  # 4096 / 16
    assert net.feature_channels == {"conv4": 32, "conv5": 64, "conv6": 256}


def test_named_features_are_the_preactivated_inputs_of_b5_and_b6_and_relu_bn7() -> None:
    net = ResNet38(width=0.0625).eval()
    outputs: dict[str, torch.Tensor] = {}
    for name in ("b4_5", "b5_2", "b7"):  # the blocks before b5 and b6, and the last one
        getattr(net, name).register_forward_hook(lambda m, args, out, name=name: outputs.update({name: out}))
    with torch.no_grad():
        features = net.forward_features(torch.rand(2, 3, 64, 64))
        conv4 = F.relu(net.b5.bn_branch2a(outputs["b4_5"]))
        conv5 = F.relu(net.b6.bn_branch2a(outputs["b5_2"]))
        last = net.bn7(outputs["b7"])
    torch.testing.assert_close(features.conv4, conv4)
    torch.testing.assert_close(features.conv5, conv5)
    torch.testing.assert_close(features.conv6_pre_relu, last)
    assert torch.equal(features.conv6, F.relu(last))


def test_width_scales_every_channel_count() -> None:
    assert scaled_channels(4096, 0.0625) == 256
    assert scaled_channels(64, 0.01) == 1  # never zero channels
    net = ResNet38(width=0.25)
    assert net.conv1a.out_channels == 16
    assert net.b7.conv_branch2b2.out_channels == 1024
    assert net.b6.conv_branch2a.out_channels == 128  # 2048 / 4, scaled
