"""The channel-spatial attention module (CSM) of DAEN and its CM / SM ablations (paper section 3.2, Table 1).

As the DAEN code has it (``network/CSMNet.py``, reference.md section 4.2; CBAM-style, channel then spatial)::

    f' = Ca(f) * f            Ca(f) = sigmoid(MLP(GAP(f)) + MLP(GMP(f)))        (B, C, 1, 1)
    out = ReLU(Sa(f') * f')   Sa(f') = sigmoid(conv7x7([mean_c(f'), max_c(f')]))  (B, 1, h, w)

The MLP is shared between the two pooled vectors: 1x1 conv C -> C/16, ReLU, 1x1 conv C/16 -> C, no biases. On
ResNet38's 4096 channels that is 2,097,152 weights, plus 98 in the 7x7 conv: 2,097,250 (reference.md 1.2).

Paper versus code (reference.md section 4.4, item 2): the paper writes Sa(f) = sigmoid(C7x7(Avg(f) + Max(f))), the
*sum* of the two maps into a 1-channel conv; the code *concatenates* them into a 2-channel conv (standard CBAM).
Both are available (``pooling``); the default is the code's ``"concat"`` because it is what the published
numbers were produced with, it keeps the two statistics apart (the conv can weigh them differently; the sum
cannot), and it is CBAM's tested design. The trailing ReLU replaces the backbone's last ReLU
(``attention_position="pre_relu"`` in :class:`~histo_daen.config.ModelConfig`).

CM and SM are not in the code; following the paper's wording (reference.md section 4.2, unverified) they are
``ReLU(Ca(f) * f)`` and ``ReLU(Sa(f) * f)``: this module with ``use_spatial=False`` or ``use_channel=False``.
Initialisation is PyTorch's default (Kaiming-uniform), as in the code.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelAttention", "ChannelSpatialAttention", "SpatialAttention"]


class ChannelAttention(nn.Module):
    """Channel weights Ca(f): global average- and max-pooling, one shared MLP, the sum through a sigmoid.

    Args:
        channels: C, the feature channels.
        reduction: hidden width of the MLP is C // reduction (at least 1, so test-sized models work).
    """

    def __init__(self, channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) features -> (B, C, 1, 1) weights in (0, 1)."""
        from_avg = self.mlp(f.mean(dim=(2, 3), keepdim=True))  # (B, C, 1, 1)
        from_max = self.mlp(f.amax(dim=(2, 3), keepdim=True))  # (B, C, 1, 1)
        return torch.sigmoid(from_avg + from_max)


class SpatialAttention(nn.Module):
    """Spatial weights Sa(f): channel-wise mean and max maps, a k x k conv, a sigmoid.

    Args:
        kernel_size: 7 (reference default) or 3; padding keeps the map size.
        pooling: ``"concat"`` stacks the two maps into a 2-channel conv (the code, CBAM); ``"sum"`` adds them
            into a 1-channel conv (the paper's formula).
    """

    def __init__(self, *, kernel_size: Literal[3, 7] = 7, pooling: Literal["concat", "sum"] = "concat") -> None:
        super().__init__()
        if kernel_size not in (3, 7):
            raise ValueError(f"kernel_size must be 3 or 7, got {kernel_size}")
        if pooling not in ("concat", "sum"):
            raise ValueError(f"pooling must be 'concat' or 'sum', got {pooling!r}")
        self.pooling = pooling
        in_channels = 2 if pooling == "concat" else 1
        self.conv = nn.Conv2d(in_channels, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) features -> (B, 1, h, w) weights in (0, 1)."""
        mean_map = f.mean(dim=1, keepdim=True)  # (B, 1, h, w)
        max_map = f.amax(dim=1, keepdim=True)  # (B, 1, h, w)
        pooled = torch.cat([mean_map, max_map], dim=1) if self.pooling == "concat" else mean_map + max_map
        return torch.sigmoid(self.conv(pooled))


class ChannelSpatialAttention(nn.Module):
    """The CSM: ``ReLU(Sa(f') * f')`` with ``f' = Ca(f) * f``; or CM / SM with one of the two switched off.

    Args:
        channels: C of the features it acts on (4096 on ResNet38).
        reduction: channel-attention MLP ratio (code: 16).
        kernel_size: spatial-attention conv size (code: 7).
        pooling: spatial-attention pooling, ``"concat"`` (code) or ``"sum"`` (paper); see the module docstring.
        use_channel: apply Ca (False gives the SM variant).
        use_spatial: apply Sa (False gives the CM variant).
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 16,
        kernel_size: Literal[3, 7] = 7,
        pooling: Literal["concat", "sum"] = "concat",
        use_channel: bool = True,
        use_spatial: bool = True,
    ) -> None:
        super().__init__()
        if not (use_channel or use_spatial):
            raise ValueError("an attention module needs channel or spatial attention (or both)")
        self.channel_attention = ChannelAttention(channels, reduction=reduction) if use_channel else None
        self.spatial_attention = SpatialAttention(kernel_size=kernel_size, pooling=pooling) if use_spatial else None

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) features (ResNet38: ``bn7`` output before its ReLU) -> (B, C, h, w), non-negative."""
        if self.channel_attention is not None:
            f = self.channel_attention(f) * f  # (B, C, 1, 1) * (B, C, h, w)
        if self.spatial_attention is not None:
            f = self.spatial_attention(f) * f  # (B, 1, h, w) * (B, C, h, w)
        return F.relu(f)
