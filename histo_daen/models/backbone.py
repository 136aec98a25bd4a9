"""What every backbone gives the CAM network: stride-8 features under fixed names, and which layers are the stem.

The names follow SEAM (``network/resnet38d.py``, ``forward_as_dict``): ``conv4`` and ``conv5`` feed the
pixel-correlation module, ``conv6`` feeds the CAM classifier. The last activation is kept apart
(``conv6_pre_relu``) because the DAEN code puts its attention module *before* the backbone's final ReLU
(reference.md section 4.2).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Backbone", "BackboneFeatures"]


class BackboneFeatures(NamedTuple):
    """Named stride-8 feature maps of one batch; h = ceil(H / 8), w = ceil(W / 8) for an (H, W) input.

    Attributes:
        conv4: (B, C4, h, w) float, non-negative (after a ReLU). PCM embedding input ``f8_3``.
        conv5: (B, C5, h, w) float, non-negative. PCM embedding input ``f8_4``.
        conv6_pre_relu: (B, C6, h, w) float, the last feature map before its final ReLU.
    """

    conv4: torch.Tensor
    conv5: torch.Tensor
    conv6_pre_relu: torch.Tensor

    @property
    def conv6(self) -> torch.Tensor:
        """(B, C6, h, w) float, ``ReLU(conv6_pre_relu)``: what the CAM classifier reads without attention."""
        return F.relu(self.conv6_pre_relu)


class Backbone(nn.Module):
    """Base of the feature extractors: an output-stride-8 network returning :class:`BackboneFeatures`.

    Subclasses set ``feature_channels`` (``{"conv4": C4, "conv5": C5, "conv6": C6}``), ``stem_names`` (the
    top-level children frozen when ``ModelConfig.freeze_stem`` is set) and implement :meth:`forward_features`.
    Their top-level children carry the parameter names of the reference layout (SEAM for ResNet38, torchvision
    for ResNet-18/50), and the CAM network registers them under those same names.
    """

    feature_channels: dict[str, int]
    stem_names: tuple[str, ...]

    def forward_features(self, x: torch.Tensor) -> BackboneFeatures:
        """(B, 3, H, W) float, already normalised -> the named stride-8 features."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float, already normalised -> (B, C6, ceil(H/8), ceil(W/8)) ``conv6`` features."""
        return self.forward_features(x).conv6
