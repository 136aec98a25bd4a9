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

Attention forms (``ModelConfig.attention_form``; the training recipe picks one by the start,
``histo_daen.training.recipe``):

- ``reference``: the code above. From random weights it collapses: the equivariant loss (ER) compares
  max-normalised CAMs, which agree between the two branches trivially when they shrink onto a few peaks, and the
  spatial weight Sa, one class-agnostic multiplier in [0, 1] per pixel, sharpens every CAM at no cost in
  classification while the features are still random. Measured on synthetic patches (ResNet-18 x0.25, 300 steps,
  seed 0): the share of lit CAM pixels (``cam_coverage``) falls to 3 %; SEAM keeps 35-39 %.
- ``residual``: ``(1 + Ca) * f`` then ``(1 + Sa) * f'``, attention as CBAM applies it inside residual branches. No
  weight can take a pixel or channel below its own features: coverage stayed at 22-32 % on three seeds. Its
  sigmoids can saturate, though, and the spatial one does: at the end of those runs Sa averaged 1e-4 to 1e-3, so
  the spatial attention had switched itself off (a saturated sigmoid has no gradient left) and DAEN trained as
  residual channel attention. The scratch recipe's form, chosen on validation mIoU.
- ``residual_centred``: ``residual`` with each sigmoid's logits centred (channel logits minus their mean over the
  channels, spatial logits minus their mean over the map), so the average weight stays sigmoid(0) = 0.5 where the
  gradient is largest: the attention cannot switch itself off (measured Sa mean 0.46-0.48). But a spatial gate
  that stays on keeps ER's path to sharpen the maps: coverage 26 %, 15 % and 4 % on three seeds. Kept to
  reproduce that finding.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from histo_daen.config.schema import AttentionForm

__all__ = ["AttentionForm", "ChannelAttention", "ChannelSpatialAttention", "SpatialAttention"]


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

    def forward(self, f: torch.Tensor, *, centred: bool = False) -> torch.Tensor:
        """(B, C, h, w) features -> (B, C, 1, 1) weights in (0, 1); ``centred``: logits minus their channel mean."""
        from_avg = self.mlp(f.mean(dim=(2, 3), keepdim=True))  # (B, C, 1, 1)
        from_max = self.mlp(f.amax(dim=(2, 3), keepdim=True))  # (B, C, 1, 1)
        logits = from_avg + from_max
        if centred:
            logits = logits - logits.mean(dim=1, keepdim=True)
        return torch.sigmoid(logits)


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

    def forward(self, f: torch.Tensor, *, centred: bool = False) -> torch.Tensor:
        """(B, C, h, w) features -> (B, 1, h, w) weights in (0, 1); ``centred``: logits minus their spatial mean."""
        mean_map = f.mean(dim=1, keepdim=True)  # (B, 1, h, w)
        max_map = f.amax(dim=1, keepdim=True)  # (B, 1, h, w)
        pooled = torch.cat([mean_map, max_map], dim=1) if self.pooling == "concat" else mean_map + max_map
        logits = self.conv(pooled)
        if centred:
            logits = logits - logits.mean(dim=(2, 3), keepdim=True)
        return torch.sigmoid(logits)


class ChannelSpatialAttention(nn.Module):
    """The CSM: ``ReLU(Sa(f') * f')`` with ``f' = Ca(f) * f``; or CM / SM with one of the two switched off.

    ``form`` says how the weights act on the features (module docstring, "Attention forms")::

        reference         f' = Ca(f) * f            out = ReLU(Sa(f') * f')            (the DAEN code)
        residual          f' = (1 + Ca(f)) * f      out = ReLU((1 + Sa(f')) * f')      (CBAM in a residual branch)
        residual_centred  as residual, with each sigmoid's logits centred (channel / spatial mean subtracted)

    Args:
        channels: C of the features it acts on (4096 on ResNet38).
        reduction: channel-attention MLP ratio (code: 16).
        kernel_size: spatial-attention conv size (code: 7).
        pooling: spatial-attention pooling, ``"concat"`` (code) or ``"sum"`` (paper); see the module docstring.
        use_channel: apply Ca (False gives the SM variant).
        use_spatial: apply Sa (False gives the CM variant).
        form: ``"reference"``, ``"residual"`` or ``"residual_centred"``.
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
        form: AttentionForm = "reference",
    ) -> None:
        super().__init__()
        if not (use_channel or use_spatial):
            raise ValueError("an attention module needs channel or spatial attention (or both)")
        if form not in get_args(AttentionForm):
            raise ValueError(f"form must be one of {', '.join(get_args(AttentionForm))}, got {form!r}")
        self.form = form
        self.channel_attention = ChannelAttention(channels, reduction=reduction) if use_channel else None
        self.spatial_attention = SpatialAttention(kernel_size=kernel_size, pooling=pooling) if use_spatial else None

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) features (ResNet38: ``bn7`` output before its ReLU) -> (B, C, h, w), non-negative."""
        residual = self.form != "reference"
        centred = self.form == "residual_centred"
        if self.channel_attention is not None:
            weights = self.channel_attention(f, centred=centred)  # (B, C, 1, 1)
            f = (1.0 + weights) * f if residual else weights * f
        if self.spatial_attention is not None:
            weights = self.spatial_attention(f, centred=centred)  # (B, 1, h, w)
            f = (1.0 + weights) * f if residual else weights * f
        return F.relu(f)
