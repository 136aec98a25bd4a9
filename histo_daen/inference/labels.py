"""CAMs -> a tissue label map: argmax over the tissue classes, white glass and low scores labelled exclude.

The LUAD rule of reference.md §5.4: the label of a pixel is the tissue class with the highest CAM among the
classes allowed for its image (no background class is predicted, as in MLPS §5.2). Then, in this order:

1. HistoSegNet's white-background map, when given, wins where it exceeds every class map -> exclude;
2. the VOC-style background threshold (``settings.background_alpha``, SEAM's ``out_cam_pred_alpha``): where the
   best class score is at or below alpha -> exclude (ties go to background, as SEAM's argmax over [alpha, CAMs]);
3. white glass (MLPS ``gen_bg_mask``, §5.3), when ``white_exclude`` is on: grey level above ``white_grey_level``
   (200) in 4-connected components of at least ``white_min_pixels`` (50) -> exclude. MLPS uses this rule to make
   its stage-2 pseudo-masks, never when scoring (its test takes the argmax over the four classes), so it is off by
   default: scored against LUAD-HistoSeg-style masks it turns pale tissue (alveolar spaces, loose stroma) into
   misses.

Exclude is the dataset's exclude index (4), which the LUAD protocol ignores in the ground truth and counts as a
miss in the prediction. Masks are written as palette PNGs with the class table's palette
(:func:`histo_daen.data.masks.write_mask`).
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.morphology import remove_small_objects

from histo_daen.classes import LUAD
from histo_daen.config.schema import InferenceConfig

__all__ = ["cams_to_label_map", "describe_label_map", "white_glass_mask"]

# ITU-R 601 luma, as OpenCV's RGB2GRAY (MLPS gen_bg_mask) and Pillow's convert("L").
_GREY_WEIGHTS = (0.299, 0.587, 0.114)


def white_glass_mask(images: torch.Tensor, *, grey_level: int = 200, min_pixels: int = 50) -> torch.Tensor:
    """Large white regions of each image (MLPS ``gen_bg_mask``, reference.md §5.3).

    Args:
        images: (B, 3, H, W) float RGB in [0, 1].
        grey_level: a pixel is white when its 0-255 grey level is above this.
        min_pixels: white 4-connected components smaller than this are not glass (nuclei gaps, lumen specks).

    Returns:
        (B, H, W) bool on the images' device, True on white glass.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    weights = torch.tensor(_GREY_WEIGHTS, dtype=torch.float32, device=images.device)
    grey = torch.einsum("bchw,c->bhw", images.float(), weights) * 255.0
    # Rounded to 0-255 first, as the reference thresholds a uint8 grey image.
    white = (grey.round() > grey_level).cpu().numpy()
    kept = np.stack([remove_small_objects(w, max_size=min_pixels - 1, connectivity=1) for w in white])
    return torch.from_numpy(kept).to(images.device)


def describe_label_map(settings: InferenceConfig, *, background_map: bool = False) -> str:
    """The rule of :func:`cams_to_label_map` with these settings, in words (for ``metrics.json``).

    Args:
        settings: ``background_alpha`` and the white-glass fields.
        background_map: a competing background map is given (HistoSegNet).
    """
    rules = []
    if background_map:
        rules.append("the white-background map beats every class")
    if settings.background_alpha is not None:
        rules.append(f"the best class score is at most {settings.background_alpha:g}")
    if settings.white_exclude:
        rules.append(
            f"white glass (grey level > {settings.white_grey_level} in 4-connected components of at least "
            f"{settings.white_min_pixels} px)"
        )
    text = "argmax over the classes allowed in the patch"
    return text + ("; exclude where " + " or ".join(rules) if rules else "; nothing is labelled exclude")


def cams_to_label_map(
    cams: torch.Tensor,
    images: torch.Tensor | None,
    *,
    settings: InferenceConfig,
    labels_used: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
    exclude_index: int = LUAD.exclude_index,
) -> torch.Tensor:
    """The label map of a batch of CAMs (rules in the module docstring).

    Args:
        cams: (B, K, H, W) float CAMs in [0, 1] at image resolution (``CamResult.cams``).
        images: (B, 3, H, W) float RGB in [0, 1], for the white-glass rule; may be ``None`` when
            ``settings.white_exclude`` is off (slides, where tissue detection already removed glass).
        settings: ``background_alpha``, ``white_exclude``, ``white_grey_level``, ``white_min_pixels``.
        labels_used: (B, K) bool, the classes allowed per image (``CamResult.labels_used``). Classes not allowed
            never win, so a pixel where every allowed CAM is 0 takes the first allowed class, not TE. An image with
            no allowed class is treated as allowing all.
        background: (B, 1, H, W) float, a competing background score (``CamResult.background``, HistoSegNet).
        exclude_index: the dataset's exclude value (LUAD and BCSS: 4).

    Returns:
        (B, H, W) uint8 dataset indices on the CAMs' device: 0..K-1 tissue classes, ``exclude_index`` excluded.
    """
    if cams.ndim != 4:
        raise ValueError(f"expected cams of shape (B, K, H, W), got {tuple(cams.shape)}")
    scores = cams.float()
    if labels_used is not None:
        allowed = labels_used.to(device=cams.device, dtype=torch.bool)
        allowed = allowed | ~allowed.any(dim=1, keepdim=True)  # nothing allowed -> everything allowed
        scores = scores.masked_fill(~allowed[:, :, None, None], -1.0)  # below any CAM value in [0, 1]
    best_score, labels = scores.max(dim=1)  # (B, H, W) each
    labels = labels.to(torch.uint8)
    excluded = torch.zeros_like(labels, dtype=torch.bool)
    if background is not None:
        excluded |= background[:, 0].float() > best_score
    if settings.background_alpha is not None:
        excluded |= best_score <= settings.background_alpha
    if settings.white_exclude:
        if images is None:
            raise ValueError("white_exclude needs the images; pass them or set white_exclude to false")
        if tuple(images.shape[-2:]) != tuple(cams.shape[-2:]):
            raise ValueError(f"images {tuple(images.shape)} and cams {tuple(cams.shape)} differ in size")
        excluded |= white_glass_mask(
            images, grey_level=settings.white_grey_level, min_pixels=settings.white_min_pixels
        ).to(cams.device)
    return labels.masked_fill(excluded, exclude_index)
