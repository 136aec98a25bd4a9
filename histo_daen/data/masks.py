"""Palette ("P" mode) mask PNGs as LUAD-HistoSeg and BCSS-WSSS ship them: pixel value = class index, 4 = exclude.

Pillow re-packs the indices of a palette image saved without a palette (a mask holding 0, 1 and 4 reads back as
0, 1 and 2), so every mask is written with the dataset's full 768-entry palette from :mod:`histo_daen.classes`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from histo_daen.atomic import atomic_write
from histo_daen.classes import ClassSet
from histo_daen.errors import DatasetError

__all__ = ["read_mask", "write_mask"]


def write_mask(path: str | os.PathLike[str], mask: np.ndarray, class_set: ClassSet) -> Path:
    """Write a class-index mask as a palette PNG with the dataset's colours, atomically.

    Args:
        path: target ``.png``.
        mask: (H, W) integer array of dataset indices: 0..K-1 tissue classes, ``class_set.exclude_index`` white.
        class_set: gives the palette (``histo_daen.classes.LUAD`` or ``BCSS``).

    Returns:
        The path written.
    """
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    top = max(len(class_set), class_set.exclude_index)
    if mask.size and (int(mask.min()) < 0 or int(mask.max()) > top):
        raise ValueError(f"mask values must be in [0, {top}], got [{int(mask.min())}, {int(mask.max())}]")
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(class_set.palette())
    with atomic_write(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a palette (or greyscale index) mask PNG.

    Returns:
        (H, W) uint8 class indices, as stored (no remapping).

    Raises:
        DatasetError: the file is not a readable PNG, or holds colours (RGB) rather than indices.
    """
    source = Path(path)
    try:
        with Image.open(source) as image:
            mode = image.mode
            if mode not in ("P", "L"):
                raise DatasetError(
                    source,
                    f"mask is an {mode} image, not a palette (P) or greyscale index PNG",
                    "Masks hold class indices (0-3 tissue, 4 exclude); convert colour masks to indices first.",
                )
            # .getdata() of a P image gives palette indices; np.asarray does the same without a copy per pixel.
            return np.asarray(image, dtype=np.uint8).copy()
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(source, f"cannot be read as a PNG mask ({err})", "Replace or remove the file.") from err
