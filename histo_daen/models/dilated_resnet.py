"""torchvision ResNet-18 / ResNet-50 dilated to output stride 8: lighter backbones for CPU users, tests and the demo.

The blocks are torchvision's own (``BasicBlock``, ``Bottleneck``) and the parameter names are torchvision's
(``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ``layer3.0.downsample.0.weight``, ...; no ``fc``), so a
torchvision ImageNet state dict loads with only its ``fc.*`` keys left over. ``layer3`` and ``layer4`` keep
stride 1 and use dilation 2 and 4, so CAMs have ResNet38's resolution (a 224 input gives 28 x 28). As in
torchvision's ``replace_stride_with_dilation``, the 3x3 conv of a dilated layer's first block keeps the previous
dilation (where its stride would have been) and the later 3x3 convs take the new one. torchvision's
``BasicBlock`` refuses dilation at construction (environment.md), so the dilations are set on the built convs,
the same way for both depths.

Named features: ``conv4`` = ``layer2`` output, ``conv5`` = ``layer3`` output, ``conv6_pre_relu`` = ``layer4``
output before the last block's final ReLU (the attention modules act there, as on ResNet38's ``bn7``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from histo_daen.models.backbone import Backbone, BackboneFeatures
from histo_daen.models.resnet38 import scaled_channels

__all__ = ["DilatedResNet"]

_BLOCKS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


def _make_layer(
    block: type[BasicBlock] | type[Bottleneck], in_channels: int, planes: int, n_blocks: int, *, stride: int
) -> nn.Sequential:
    """A torchvision residual stage with torchvision's module names (``0.conv1``, ``0.downsample.0``, ...)."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    blocks = [block(in_channels, planes, stride, downsample)]
    blocks += [block(out_channels, planes) for _ in range(1, n_blocks)]
    return nn.Sequential(*blocks)


def _dilate_layer(layer: nn.Sequential, *, previous_dilation: int, dilation: int) -> None:
    """Set dilation (= padding) on the 3x3 convs of a stage built with stride 1 (torchvision's dilation rule)."""
    first = True
    for block in layer:
        for name in ("conv1", "conv2") if isinstance(block, BasicBlock) else ("conv2",):
            conv = block.get_submodule(name)
            assert isinstance(conv, nn.Conv2d)
            d = previous_dilation if first else dilation
            conv.dilation, conv.padding = (d, d), (d, d)
            first = False


def _forward_block_without_last_relu(block: BasicBlock | Bottleneck, x: torch.Tensor) -> torch.Tensor:
    """A torchvision block's output before its final ReLU (the block reuses one ReLU module, so it cannot be
    swapped out); mirrors ``BasicBlock.forward`` / ``Bottleneck.forward`` up to that ReLU."""
    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    if isinstance(block, Bottleneck):
        out = block.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
    else:
        out = block.bn2(block.conv2(out))
    return out + identity


class DilatedResNet(Backbone):
    """torchvision ResNet-18 or -50 at output stride 8, random init as torchvision (Kaiming-normal convs).

    Args:
        depth: 18 (``BasicBlock``, C6 = 512) or 50 (``Bottleneck``, C6 = 2048).
        width: channel multiplier on torchvision's 64/128/256/512 planes (1.0 = the published network).
    """

    stem_names = ("conv1", "bn1", "layer1")

    def __init__(self, *, depth: Literal[18, 50] = 50, width: float = 1.0) -> None:
        super().__init__()
        if depth not in _BLOCKS:
            raise ValueError(f"depth must be one of {sorted(_BLOCKS)}, got {depth}")
        block, counts = _BLOCKS[depth]
        planes = [scaled_channels(p, width) for p in (64, 128, 256, 512)]
        stem = planes[0]
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = [p * block.expansion for p in planes]
        self.layer1 = _make_layer(block, stem, planes[0], counts[0], stride=1)
        self.layer2 = _make_layer(block, channels[0], planes[1], counts[1], stride=2)
        self.layer3 = _make_layer(block, channels[1], planes[2], counts[2], stride=1)
        self.layer4 = _make_layer(block, channels[2], planes[3], counts[3], stride=1)
        _dilate_layer(self.layer3, previous_dilation=1, dilation=2)
        _dilate_layer(self.layer4, previous_dilation=2, dilation=4)
        self.feature_channels = {"conv4": channels[1], "conv5": channels[2], "conv6": channels[3]}
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> BackboneFeatures:
        """(B, 3, H, W) float, normalised -> features at stride 8 (h = ceil(H / 8))."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64w, H/4, W/4)
        x = self.layer1(x)  # (B, 64w*e, H/4, W/4), e = block expansion (1 or 4)
        conv4 = self.layer2(x)  # (B, 128w*e, h, w)
        conv5 = self.layer3(conv4)  # (B, 256w*e, h, w), dilation 2
        x = self.layer4[:-1](conv5)  # dilation 4
        last = _forward_block_without_last_relu(self.layer4[-1], x)  # (B, 512w*e, h, w)
        return BackboneFeatures(conv4=conv4, conv5=conv5, conv6_pre_relu=last)
