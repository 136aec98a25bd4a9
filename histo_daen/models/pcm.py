"""SEAM's pixel-correlation module (PCM) and the CAM normalisation that feeds it, as pure tensor functions.

Reference.md section 2.2 (SEAM ``network/resnet38_SEAM.py``, identical in DAEN), step by step:

1. :func:`normalise_cams`: ``a = ReLU(cam)``; per channel ``ReLU(a - 1e-5) / (max_hw(a) + 1e-5)``, in [0, 1).
2. :func:`add_background_channel`: a synthetic channel 0 = ``1 - max over foreground``; whatever fc8's own
   channel 0 computed is discarded.
3. :func:`winner_take_all`: at each pixel, foreground channels below that pixel's foreground maximum become 0;
   the winner keeps its value (it is not set to 1), ties are all kept, channel 0 is left alone.
4. :func:`pixel_affinity`: embeddings L2-normalised per pixel (``/ (norm + 1e-5)``), ``A = ReLU(F^T F)``
   (cosine similarity, negatives clipped), then each column divided by its sum ``+ 1e-5``. A is symmetric before
   the division, so this is the paper's row normaliser O(x_i) with the ReLU applied first (section 4.4, item 6).
5. :func:`refine_cams`: ``cam_rv[c, j] = sum_i cam[c, i] * A[i, j]``: each pixel's refined score is the
   affinity-weighted average of the seed scores; it *replaces* the CAM (item 7; the paper's text says "added",
   ``ModelConfig.pcm_output="add"``).

Memory: A is (h*w) x (h*w) per image, O((hw)^2): 784^2 = 0.6 M floats (2.5 MB) for the 28 x 28 CAM of a 224 patch,
3136^2 = 9.8 M floats (39 MB) for the 56 x 56 CAM of a 448 crop, times the batch size, plus the same again for
the ReLU/normalisation temporaries. The affinity is computed in float32 even under autocast, because the
column sums of hundreds of small cosine values lose too much in bfloat16.

Gradient flow (reference.md section 2.2): the seed CAMs are computed under ``no_grad`` from a detached copy and
the PCM reads detached backbone features, so losses on the refined CAMs train only the PCM's own layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "add_background_channel",
    "normalise_cams",
    "pcm_seed_cams",
    "pixel_affinity",
    "refine_cams",
    "winner_take_all",
]

_EPS = 1e-5  # the reference code's epsilon, everywhere in this module


def normalise_cams(cams: torch.Tensor) -> torch.Tensor:
    """Per-channel max normalisation after ReLU, as SEAM does before the PCM.

    Args:
        cams: (B, K, h, w) float raw CAMs (any sign).

    Returns:
        (B, K, h, w) float in [0, 1): ``ReLU(ReLU(cams) - 1e-5) / (max_hw ReLU(cams) + 1e-5)``; an all-negative
        channel becomes all 0.
    """
    positive = F.relu(cams)
    peak = positive.amax(dim=(2, 3), keepdim=True) + _EPS  # (B, K, 1, 1)
    return F.relu(positive - _EPS) / peak


def add_background_channel(normalised: torch.Tensor) -> torch.Tensor:
    """Prepend the synthetic background ``1 - max_k normalised_k``.

    Args:
        normalised: (B, K, h, w) float foreground scores in [0, 1].

    Returns:
        (B, 1 + K, h, w) float in [0, 1]: channel 0 is background, channels 1.. are ``normalised`` unchanged.
    """
    background = 1.0 - normalised.amax(dim=1, keepdim=True)  # (B, 1, h, w)
    return torch.cat([background, normalised], dim=1)


def winner_take_all(scores: torch.Tensor) -> torch.Tensor:
    """Zero every foreground channel below the per-pixel foreground maximum (SEAM's ``max_onehot``).

    Args:
        scores: (B, 1 + K, h, w) float, channel 0 = background.

    Returns:
        A new tensor of the same shape: channel 0 unchanged; at each pixel the foreground winner keeps its value
        (ties all keep theirs), the other foreground channels are 0. The input is not modified.
    """
    foreground = scores[:, 1:]
    winner = foreground.amax(dim=1, keepdim=True)  # (B, 1, h, w)
    kept = torch.where(foreground < winner, torch.zeros_like(foreground), foreground)
    return torch.cat([scores[:, :1], kept], dim=1)


def pcm_seed_cams(cams: torch.Tensor) -> torch.Tensor:
    """The PCM's input from raw foreground CAMs: normalise, add the background channel, winner-take-all.

    Computed without gradient on a detached copy, as in the reference code.

    Args:
        cams: (B, K, h, w) float raw foreground CAMs (fc8's background channel, if any, already dropped).

    Returns:
        (B, 1 + K, h, w) float in [0, 1], no gradient.
    """
    with torch.no_grad():
        return winner_take_all(add_background_channel(normalise_cams(cams.detach())))


def pixel_affinity(embeddings: torch.Tensor) -> torch.Tensor:
    """Column-normalised cosine affinity between all pixel pairs of each image.

    Args:
        embeddings: (B, D, h, w) float per-pixel embeddings (SEAM: ``f9`` output, 192 channels).

    Returns:
        (B, h*w, h*w) float32, non-negative, each column summing to 1 (up to the 1e-5 guard). Memory O((hw)^2).
    """
    b, d, h, w = embeddings.shape
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        flat = embeddings.float().reshape(b, d, h * w)  # (B, D, hw)
        flat = flat / (torch.linalg.vector_norm(flat, dim=1, keepdim=True) + _EPS)
        affinity = F.relu(torch.bmm(flat.transpose(1, 2), flat))  # (B, hw, hw)
        return affinity / (affinity.sum(dim=1, keepdim=True) + _EPS)


def refine_cams(cams: torch.Tensor, affinity: torch.Tensor) -> torch.Tensor:
    """Propagate scores along the affinity: ``refined[c, j] = sum_i cams[c, i] * affinity[i, j]``.

    Args:
        cams: (B, C, h, w) float seed scores.
        affinity: (B, h*w, h*w) float, as from :func:`pixel_affinity`.

    Returns:
        (B, C, h, w) float32 refined scores.
    """
    b, c, h, w = cams.shape
    if affinity.shape != (b, h * w, h * w):
        raise ValueError(f"affinity of shape {tuple(affinity.shape)} does not fit CAMs of shape {tuple(cams.shape)}")
    with torch.autocast(device_type=cams.device.type, enabled=False):
        refined = torch.bmm(cams.float().reshape(b, c, h * w), affinity.float())  # (B, C, hw)
    return refined.reshape(b, c, h, w)
