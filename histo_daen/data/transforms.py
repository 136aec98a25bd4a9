"""Paired patch augmentations for histology: parameters drawn once per patch, applied to image and mask alike.

Geometry uses the dihedral group (mirrors and 90-degree turns: tissue has no up and these need no interpolation);
colour is either stain jitter in haematoxylin-eosin-DAB space (Tellez et al., 2018, a common choice for H&E) or
SEAM's ColorJitter. Each call takes its own ``np.random.Generator`` so a patch's augmentation depends only on the
generator's seed, not on which worker process or in which order it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from skimage.color import hed_from_rgb, rgb_from_hed

from histo_daen.config.schema import AugmentConfig

__all__ = ["AugmentParams", "PatchAugment", "apply_dihedral", "hed_jitter", "resize_patch"]


@dataclass(frozen=True)
class AugmentParams:
    """The random choices for one patch.

    Attributes:
        quarter_turns: counter-clockwise 90-degree turns, 0-3 (applied after the mirror).
        mirror: mirror left-right first.
        colour: per-channel (scale, shift) for hed, or (brightness, contrast, saturation, hue) factors for jitter.
    """

    quarter_turns: int = 0
    mirror: bool = False
    colour: tuple[float, ...] = ()


def apply_dihedral(array: np.ndarray, *, quarter_turns: int, mirror: bool) -> np.ndarray:
    """Mirror left-right (if asked), then turn counter-clockwise by ``quarter_turns`` x 90 degrees.

    Args:
        array: (H, W) or (H, W, C), any dtype.

    Returns:
        A contiguous array of the same dtype; (W, H, ...) for odd ``quarter_turns``. The input is not modified.
    """
    out = array[:, ::-1] if mirror else array
    return np.ascontiguousarray(np.rot90(out, k=quarter_turns % 4, axes=(0, 1)))


def hed_jitter(image: np.ndarray, scales: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Stain augmentation: scale and shift each of the H, E, D stain optical densities, then back to RGB.

    Uses Ruifrok & Johnston's stain matrix (scikit-image's ``hed_from_rgb``) but, unlike ``rgb2hed``, does not clip
    negative stain amounts, so neutral parameters give the image back (to rounding) for any colour.

    Args:
        image: (H, W, 3) uint8 RGB.
        scales: (3,) multipliers of the H, E, D optical densities (1 = unchanged).
        shifts: (3,) optical densities added to H, E, D (0 = unchanged; 0.05 is a light change).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    rgb = np.maximum(image.astype(np.float32), 1.0) / 255.0
    optical_density = -np.log(rgb)  # (H, W, 3) Beer-Lambert
    stains = optical_density @ hed_from_rgb.astype(np.float32)
    stains = stains * scales.astype(np.float32) + shifts.astype(np.float32)
    out = np.exp(-(stains @ rgb_from_hed.astype(np.float32))) * 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _jitter(image: np.ndarray, factors: tuple[float, ...]) -> np.ndarray:
    brightness, contrast, saturation, hue = factors
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (3, H, W) uint8
    tensor = TF.adjust_brightness(tensor, brightness)
    tensor = TF.adjust_contrast(tensor, contrast)
    tensor = TF.adjust_saturation(tensor, saturation)
    tensor = TF.adjust_hue(tensor, hue)
    return tensor.permute(1, 2, 0).contiguous().numpy()


class PatchAugment:
    """Training augmentation of one patch (and its mask, when it has one).

    Example:
        >>> augment = PatchAugment(AugmentConfig(colour="none"))
        >>> image_out, mask_out = augment(image, mask, np.random.default_rng(0))
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    def draw(self, rng: np.random.Generator) -> AugmentParams:
        """Draw the parameters for one patch."""
        cfg = self.cfg
        quarter_turns = int(rng.integers(0, 4)) if cfg.rotations else 0
        mirror = bool(rng.integers(0, 2)) if cfg.flips else False
        colour: tuple[float, ...] = ()
        if cfg.colour == "hed" and cfg.hed_strength > 0:
            s = cfg.hed_strength
            colour = tuple(rng.uniform(1 - s, 1 + s, size=3)) + tuple(rng.uniform(-s, s, size=3))
        elif cfg.colour == "jitter":
            colour = (
                float(rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)),
                float(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)),
                float(rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)),
                float(rng.uniform(-cfg.hue, cfg.hue)),
            )
        return AugmentParams(quarter_turns=quarter_turns, mirror=mirror, colour=colour)

    def apply(
        self, image: np.ndarray, mask: np.ndarray | None, params: AugmentParams
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Apply drawn parameters: geometry to image and mask, colour to the image only.

        Args:
            image: (H, W, 3) uint8 RGB.
            mask: (H, W) integer class indices, or None.

        Returns:
            The augmented (H', W', 3) uint8 image and (H', W') mask (or None); inputs are not modified.
        """
        # Both flips and all four turns together give all 8 symmetries of the square; one mirror suffices.
        image = apply_dihedral(image, quarter_turns=params.quarter_turns, mirror=params.mirror)
        if mask is not None:
            mask = apply_dihedral(mask, quarter_turns=params.quarter_turns, mirror=params.mirror)
        if params.colour and self.cfg.colour == "hed":
            image = hed_jitter(image, np.asarray(params.colour[:3]), np.asarray(params.colour[3:]))
        elif params.colour and self.cfg.colour == "jitter":
            image = _jitter(image, params.colour)
        return image, mask

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        return self.apply(image, mask, self.draw(rng))


def resize_patch(
    image: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Resize a patch by ``scale`` (bilinear, antialiased) and its mask (nearest), e.g. 2.0 for SEAM's 448 inputs.

    Args:
        image: (3, H, W) float32 in [0, 1].
        mask: (H, W) int64 or None.

    Returns:
        (3, round(H * scale), round(W * scale)) image and the mask at the same size.
    """
    if scale == 1.0:
        return image, mask
    shape_hw = [round(image.shape[1] * scale), round(image.shape[2] * scale)]
    resized = TF.resize(image, shape_hw, interpolation=TF.InterpolationMode.BILINEAR, antialias=True).clamp_(0, 1)
    if mask is not None:
        mask = TF.resize(mask[None], shape_hw, interpolation=TF.InterpolationMode.NEAREST_EXACT)[0]
    return resized, mask
