"""ResNet38 ("wide ResNet-38", Wu, Shen & van den Hengel, model A1), the backbone of SEAM, MLPS and DAEN.

Layout exactly as reference.md section 1.1 (SEAM ``network/resnet38d.py``): pre-activation wide residual blocks,
no conv biases, output stride 8 (``b5`` dilation 1/2, ``b5_*`` 2, ``b6``/``b7`` 4), Dropout2d 0.3 in ``b6`` and
0.5 in ``b7``. Module and parameter names are SEAM's (``conv1a.weight``, ``b2.conv_branch2a.weight``,
``b6.bn_branch2b2.running_var``, ``bn7.weight``, ...), so SEAM/MLPS/converted-MXNet state dicts load without
renaming. At ``width=1`` the backbone holds 105,070,912 conv and BatchNorm weights (43 conv weights + 37 BN with
weight and bias) plus 47,744 running-stat buffers, as computed in reference.md section 1.2.

What differs from the reference code: ``width`` scales every channel count (test-sized models through the same
code), and freezing (BN, ``conv1a``/``b2*``) is done by the CAM network from its config rather than inside
``train()`` here (:mod:`histo_daen.models.cam_net`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from histo_daen.models.backbone import Backbone, BackboneFeatures

__all__ = ["ResNet38", "scaled_channels"]


def scaled_channels(channels: int, width: float) -> int:
    """A reference channel count times the width multiplier, at least 1 (``width=1`` keeps it unchanged)."""
    return max(1, round(channels * width))


class _BasicBlock(nn.Module):
    """Pre-activation block of two 3x3 convs (SEAM ``ResBlock``); the output is not activated.

    Args:
        in_channels, mid_channels, out_channels: channels in, after the first conv, out.
        stride: stride of the first 3x3 conv and of the 1x1 shortcut.
        first_dilation: dilation (= padding) of the first 3x3 conv.
        dilation: dilation (= padding) of the second 3x3 conv.
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        first_dilation: int = 1,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.same_shape = in_channels == out_channels and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(in_channels)
        self.conv_branch2a = nn.Conv2d(
            in_channels, mid_channels, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False
        )
        self.bn_branch2b1 = nn.BatchNorm2d(mid_channels)
        self.conv_branch2b1 = nn.Conv2d(mid_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward_with_preactivation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, in, H, W) -> (block output (B, out, H/s, W/s), BN->ReLU of the input (B, in, H, W))."""
        preactivated = F.relu(self.bn_branch2a(x))
        # The shortcut takes the pre-activated input when the shape changes, the raw input otherwise.
        shortcut = x if self.same_shape else self.conv_branch1(preactivated)
        branch = self.conv_branch2a(preactivated)
        branch = self.conv_branch2b1(F.relu(self.bn_branch2b1(branch)))
        return shortcut + branch, preactivated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_preactivation(x)[0]


class _BottleneckBlock(nn.Module):
    """Pre-activation bottleneck 1x1 / dilated 3x3 / 1x1 with Dropout2d (SEAM ``ResBlock_bot``, ``b6`` and ``b7``).

    Args:
        in_channels: channels in.
        channels: reference output channels (4096 for ``b7``); the inner convs have channels/4 and channels/2,
            all three scaled by ``width``.
        width: channel multiplier.
        dilation: dilation (= padding) of the 3x3 conv.
        dropout: Dropout2d probability before the 3x3 and the last 1x1 conv.
    """

    def __init__(self, in_channels: int, channels: int, *, width: float, dilation: int, dropout: float) -> None:
        super().__init__()
        quarter, half, out = (scaled_channels(c, width) for c in (channels // 4, channels // 2, channels))
        self.bn_branch2a = nn.BatchNorm2d(in_channels)
        self.conv_branch2a = nn.Conv2d(in_channels, quarter, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(quarter)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(quarter, half, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(half)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(half, out, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_channels, out, 1, bias=False)  # always: in != out in b6 and b7

    def forward_with_preactivation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, in, H, W) -> (block output (B, out, H, W), BN->ReLU of the input (B, in, H, W))."""
        preactivated = F.relu(self.bn_branch2a(x))
        shortcut = self.conv_branch1(preactivated)
        branch = self.conv_branch2a(preactivated)
        branch = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(branch))))
        branch = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(branch))))
        return shortcut + branch, preactivated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_preactivation(x)[0]


class ResNet38(Backbone):
    """ResNet38 at output stride 8, with SEAM's named features.

    Features (reference.md section 1.1, at ``width=1``): ``conv4`` = BN->ReLU input of ``b5`` (512 ch),
    ``conv5`` = BN->ReLU input of ``b6`` (1024 ch), ``conv6_pre_relu`` = ``bn7(b7(.))`` (4096 ch; ``conv6`` is its
    ReLU). All at stride 8: a 224 input gives 28 x 28, a 448 input 56 x 56.

    Args:
        width: channel multiplier applied to every reference channel count (1.0 = the published network).
    """

    stem_names = ("conv1a", "b2", "b2_1", "b2_2")

    def __init__(self, *, width: float = 1.0) -> None:
        super().__init__()

        def c(channels: int) -> int:
            return scaled_channels(channels, width)

        self.conv1a = nn.Conv2d(3, c(64), 3, padding=1, bias=False)
        self.b2 = _BasicBlock(c(64), c(128), c(128), stride=2)
        self.b2_1 = _BasicBlock(c(128), c(128), c(128))
        self.b2_2 = _BasicBlock(c(128), c(128), c(128))
        self.b3 = _BasicBlock(c(128), c(256), c(256), stride=2)
        self.b3_1 = _BasicBlock(c(256), c(256), c(256))
        self.b3_2 = _BasicBlock(c(256), c(256), c(256))
        self.b4 = _BasicBlock(c(256), c(512), c(512), stride=2)
        self.b4_1 = _BasicBlock(c(512), c(512), c(512))
        self.b4_2 = _BasicBlock(c(512), c(512), c(512))
        self.b4_3 = _BasicBlock(c(512), c(512), c(512))
        self.b4_4 = _BasicBlock(c(512), c(512), c(512))
        self.b4_5 = _BasicBlock(c(512), c(512), c(512))
        self.b5 = _BasicBlock(c(512), c(512), c(1024), first_dilation=1, dilation=2)
        self.b5_1 = _BasicBlock(c(1024), c(512), c(1024), first_dilation=2, dilation=2)
        self.b5_2 = _BasicBlock(c(1024), c(512), c(1024), first_dilation=2, dilation=2)
        self.b6 = _BottleneckBlock(c(1024), 2048, width=width, dilation=4, dropout=0.3)
        self.b7 = _BottleneckBlock(c(2048), 4096, width=width, dilation=4, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(c(4096))
        self.feature_channels = {"conv4": c(512), "conv5": c(1024), "conv6": c(4096)}

    def forward_features(self, x: torch.Tensor) -> BackboneFeatures:
        """(B, 3, H, W) float, normalised -> features at stride 8 (h = ceil(H / 8))."""
        x = self.conv1a(x)  # (B, 64w, H, W)
        x = self.b2_2(self.b2_1(self.b2(x)))  # (B, 128w, H/2, W/2)
        x = self.b3_2(self.b3_1(self.b3(x)))  # (B, 256w, H/4, W/4)
        x = self.b4(x)  # (B, 512w, H/8, W/8)
        x = self.b4_5(self.b4_4(self.b4_3(self.b4_2(self.b4_1(x)))))
        x, conv4 = self.b5.forward_with_preactivation(x)  # (B, 1024w, h, w); conv4 (B, 512w, h, w)
        x = self.b5_2(self.b5_1(x))
        x, conv5 = self.b6.forward_with_preactivation(x)  # (B, 2048w, h, w); conv5 (B, 1024w, h, w)
        x = self.b7(x)  # (B, 4096w, h, w)
        return BackboneFeatures(conv4=conv4, conv5=conv5, conv6_pre_relu=self.bn7(x))
