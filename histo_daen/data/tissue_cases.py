"""Synthetic slides that exercise tissue detection: one per thing a tissue mask gets wrong, each with its truth.

Every case is a :func:`~histo_daen.data.synthetic_slide.write_synthetic_slide` call with a few options; the slide's
:meth:`~histo_daen.data.synthetic_slide.SyntheticSlide.tissue_truth` is the tissue a detector should keep (tissue
not hidden under ink or a bubble edge), on a grid of ``CASE_MASK_MPP`` um per pixel, the tiler's thumbnail scale.

========================  ===================================================================================
``plain``                 ordinary sections of the four classes: what worked before must keep working
``dark_lymphoid``         lymphocyte sheets and tumour stained so dark (4.5x haematoxylin) that they are dark
                          violet at thumbnail scale, their darkest pixels near black
``pigment``               anthracotic (carbon) pigment: black clusters and specks inside the tissue
``pale``                  faded stain (0.35x) on stroma-rich tissue: nearly as bright as the glass
``fatty``                 fat lobules (empty cells, thin membranes), white at thumbnail scale
``ink``                   blue, green and black marker: circles and strokes crossing the tissue, and the margin marks
``red_ink``               red marker crossing the tissue: as red as eosin
``dust_bubble``           dust specks and the edge of an air bubble over tissue and glass
========================  ===================================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histo_daen.data.synthetic_slide import Compression, SyntheticSlide, write_synthetic_slide
from histo_daen.data.synthetic_tissue import ADIPOSE_INDEX, LYM, NEC, TAS, TE
from histo_daen.errors import ConfigError

__all__ = ["CASE_MASK_MPP", "TISSUE_CASES", "TissueCase", "write_tissue_case"]

CASE_MASK_MPP = 8.0  # micrometres per ground-truth pixel: the tiler's default thumbnail scale


@dataclass(frozen=True)
class TissueCase:
    """A named synthetic slide for tissue detection.

    Attributes:
        name: short name (file stem, table row).
        description: one line for people.
        options: keyword arguments of :func:`~histo_daen.data.synthetic_slide.write_synthetic_slide`.
    """

    name: str
    description: str
    options: Mapping[str, Any] = field(default_factory=dict)


TISSUE_CASES: dict[str, TissueCase] = {
    case.name: case
    for case in (
        TissueCase("plain", "ordinary sections of the four classes"),
        TissueCase(
            "dark_lymphoid",
            "dense lymphocyte sheets, darkly stained (4.5x haematoxylin): dark violet at thumbnail scale",
            {"classes": (LYM, LYM, LYM, TE, TAS), "stain_scale": (4.5, 1.0)},
        ),
        TissueCase(
            "pigment",
            "anthracotic pigment: black clusters 40-200 um and specks inside the tissue",
            {"classes": (LYM, TE, TAS, NEC), "pigment": True},
        ),
        TissueCase(
            "pale",
            "faded stain (0.35x) on stroma-rich tissue: nearly as bright as the glass",
            {"classes": (TAS, TAS, TE, NEC), "stain_scale": (0.35, 0.35)},
        ),
        TissueCase(
            "fatty",
            "fat lobules in stroma: empty cells with thin membranes, white at thumbnail scale",
            {"classes": (TAS, ADIPOSE_INDEX, ADIPOSE_INDEX, TE, LYM)},
        ),
        TissueCase(
            "ink",
            "blue, green and black marker circles and strokes crossing the tissue, margin marks",
            {"ink": ("blue", "green", "black"), "pen_marks": True},
        ),
        TissueCase("red_ink", "red marker circle and stroke crossing the tissue", {"ink": ("red",)}),
        TissueCase(
            "dust_bubble", "dust specks and an air bubble's edge over tissue and glass", {"dust": True, "bubble": True}
        ),
    )
}


def write_tissue_case(
    name: str,
    folder: str | os.PathLike[str],
    *,
    size_wh: tuple[int, int] = (4096, 3072),
    mpp: float = 1.0,
    seed: int = 0,
    compression: Compression = "jpeg",
    kind: str = "svs",
) -> SyntheticSlide:
    """Write case ``name`` as ``folder/<name>.svs`` (or ``.tiff``), with its truth on an 8-um grid.

    Args:
        name: a key of :data:`TISSUE_CASES`.
        folder: where the slide and its ground truth go.
        size_wh: level-0 size; the default, 4 x 3 mm at 1 um/px, holds three tissue pieces about 1 mm across.
        mpp: level-0 microns per pixel; ``CASE_MASK_MPP / mpp`` must be a whole number.
        seed: the slide's seed (same seed, same pixels).
        compression: ``"jpeg"`` like a scanner, or ``"zlib"`` (lossless).
        kind: ``"svs"`` or ``"tiff"``.
    """
    if name not in TISSUE_CASES:
        raise ConfigError(f"unknown tissue case {name!r}; choose from {', '.join(TISSUE_CASES)}")
    downsample = CASE_MASK_MPP / mpp
    if abs(downsample - round(downsample)) > 1e-9 or downsample < 1:
        raise ConfigError(f"{CASE_MASK_MPP:g} um must be a whole number of level-0 pixels of {mpp:g} um")
    suffix = ".svs" if kind == "svs" else ".tiff"
    return write_synthetic_slide(
        Path(folder) / f"{name}{suffix}",
        size_wh=size_wh,
        mpp=mpp,
        levels=3,
        kind="svs" if kind == "svs" else "tiff",
        compression=compression,
        seed=seed,
        mask_downsample=round(downsample),
        **TISSUE_CASES[name].options,
    )
