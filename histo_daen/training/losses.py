"""SEAM's training losses as pure tensor functions (reference.md §3.3), for any number of classes.

Notation of §3.3: K foreground classes, C = 1 + K channels once the synthetic background channel 0 is added,
``y`` the patch label with a constant 1 for the background. All inputs are float tensors; nothing is modified in
place. Where the papers' formulas and SEAM's code disagree (reference.md §4.4, items 9-11) the code is followed:

- ER is the *mean* absolute difference over the foreground channels of min-max normalised, label-masked CAMs.
- ECR compares each branch's PCM output with the other branch's *detached*, winner-take-all CAM and averages the
  hardest ``top_fraction`` of the C x h x w entries per patch; SEAM hard-codes C = 21 (VOC), here C is read from
  the tensor, so k = int(C * h * w * 0.2) also fits LUAD's C = 5.
- "rvmin" (in SEAM's code only) pushes the smallest quarter of the PCM output's per-pixel foreground maximum
  towards zero; SEAM adds it to the classification loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "classification_loss",
    "cross_equivariant_loss",
    "equivariant_loss",
    "max_norm",
    "rebuild_background",
    "rvmin_loss",
    "winner_take_all",
    "with_background_label",
]

_EPS = 1e-5  # SEAM's epsilon in max_norm


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multilabel soft margin over the foreground classes (§3.3 "Classification"; background is never scored).

    Args:
        logits: (B, K) float class scores (GAP of the CAMs).
        labels: (B, K) float 0/1 patch labels.

    Returns:
        Scalar: mean over classes of -[y log s(p) + (1 - y) log(1 - s(p))], then mean over the batch.
    """
    return F.multilabel_soft_margin_loss(logits.float(), labels.float())


def max_norm(cams: torch.Tensor) -> torch.Tensor:
    """SEAM's per-channel min-max normalisation after ReLU: ``ReLU(p - min - eps) / (max - min + eps)``.

    Args:
        cams: (B, C, H, W) float scores.

    Returns:
        (B, C, H, W) in [0, 1), each channel's minimum mapped to 0 (min and max over H x W of ReLU(cams)).
    """
    positive = F.relu(cams)
    flat = positive.flatten(2)  # (B, C, H*W)
    top = flat.amax(dim=2)[..., None, None]  # (B, C, 1, 1)
    bottom = flat.amin(dim=2)[..., None, None]
    return F.relu(positive - bottom - _EPS) / (top - bottom + _EPS)


def with_background_label(labels: torch.Tensor) -> torch.Tensor:
    """(B, K) labels -> (B, 1 + K, 1, 1) with SEAM's constant background entry 1 in front, for masking CAMs."""
    ones = torch.ones_like(labels[:, :1])
    return torch.cat([ones, labels], dim=1)[..., None, None]


def rebuild_background(cams: torch.Tensor) -> torch.Tensor:
    """Channel 0 := 1 - max over the foreground channels (§3.3 "Rebuild bg"); a new tensor, input unchanged.

    Args:
        cams: (B, 1 + K, H, W) normalised scores; channel 0 is replaced.
    """
    foreground = cams[:, 1:]
    background = 1.0 - foreground.amax(dim=1, keepdim=True)
    return torch.cat([background, foreground], dim=1)


def winner_take_all(cams: torch.Tensor) -> torch.Tensor:
    """SEAM's ``max_onehot``: foreground channels below the per-pixel foreground maximum become 0.

    The winner keeps its value (it is not set to 1), ties all survive and channel 0 is left alone.

    Args:
        cams: (B, 1 + K, H, W).

    Returns:
        (B, 1 + K, H, W), a new tensor.
    """
    foreground = cams[:, 1:]
    top = foreground.amax(dim=1, keepdim=True)
    kept = torch.where(foreground == top, foreground, torch.zeros_like(foreground))
    return torch.cat([cams[:, :1], kept], dim=1)


def equivariant_loss(transformed_cams: torch.Tensor, twin_cams: torch.Tensor) -> torch.Tensor:
    """ER (§3.3): ``mean(|A(c1) - c2|)`` over the foreground channels, absent classes (all zero) included.

    Args:
        transformed_cams: (B, 1 + K, h, w) branch 1's normalised, label-masked CAM mapped by the twin transform A.
        twin_cams: (B, 1 + K, h, w) branch 2's (the transformed input's) normalised, label-masked CAM.

    Returns:
        Scalar L1 mean over B x K x h x w.
    """
    return (transformed_cams[:, 1:] - twin_cams[:, 1:]).abs().mean()


def cross_equivariant_loss(
    other_cams: torch.Tensor, refined: torch.Tensor, *, top_fraction: float = 0.2
) -> torch.Tensor:
    """One ECR term (§3.3): top-k mean of ``|wta(other.detach()) - refined|`` per patch, then mean over patches.

    Args:
        other_cams: (B, C, h, w) the other branch's normalised, label-masked CAM with its background rebuilt
            (:func:`rebuild_background`); detached here, so the term trains only what produced ``refined``.
        refined: (B, C, h, w) this branch's normalised, label-masked PCM output (background from the PCM).
        top_fraction: share of the C * h * w entries averaged, the largest ones (SEAM: 0.2).

    Returns:
        Scalar. k = int(C * h * w * top_fraction), with C the real channel count (SEAM hard-codes 21).
    """
    b, c, h, w = refined.shape
    k = max(1, int(c * h * w * top_fraction))
    errors = (winner_take_all(other_cams.detach()) - refined).abs().reshape(b, -1)  # (B, C*h*w)
    return errors.topk(k, dim=1).values.mean()


def rvmin_loss(refined_foreground: torch.Tensor, labels: torch.Tensor, *, fraction: float = 0.25) -> torch.Tensor:
    """SEAM's ``adaptive_min_pooling_loss`` on the label-masked PCM output ("rvmin", §3.3).

    Per pixel, take the maximum over the present foreground classes; keep the k = floor(H * W * fraction) smallest
    maxima of each patch, apply ReLU and average: sum / (k * B). SEAM's comment: it moves the best background
    threshold rather than the best score.

    Args:
        refined_foreground: (B, K, H, W) PCM output (not normalised), foreground channels.
        labels: (B, K) 0/1 patch labels.
        fraction: share of pixels kept (SEAM: 1/4).

    Returns:
        Scalar.
    """
    b, _, h, w = refined_foreground.shape
    k = max(1, int(h * w * fraction))
    masked = refined_foreground * labels[..., None, None].to(refined_foreground.dtype)
    per_pixel = masked.amax(dim=1).reshape(b, -1)  # (B, H*W)
    smallest = per_pixel.topk(k, dim=1, largest=False).values
    return F.relu(smallest).sum() / (k * b)
