"""Frozen dataclasses for every command's configuration. Defaults live here and nowhere else.

Each section is owned by the package that uses it; ``configs/*.yaml`` list only what differs from these defaults.
Field comments give units; closed choices are ``Literal`` so the loader lists the valid values on a typo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ModelConfig", "TileConfig"]

Backend = Literal["auto", "openslide", "tiffslide"]


@dataclass(frozen=True)
class TileConfig:
    """How ``histo-daen tile`` finds tissue and cuts it into tiles."""

    target_mpp: float = 1.0  # microns per pixel of the tiles; 1.0 is the resolution of LUAD-HistoSeg patches
    tile_size: int = 224  # tile side in target pixels
    overlap: int = 0  # pixels (at the target mpp) shared by neighbouring tiles
    min_tissue: float = 0.5  # fraction of a tile that must be tissue for it to be kept, in [0, 1]
    tissue_mpp: float = 8.0  # microns per pixel of the thumbnail the tissue mask is computed on
    format: Literal["png", "jpeg"] = "png"
    jpeg_quality: int = 90
    backend: Backend = "auto"
    slide_mpp: float | None = None  # override for slides with no (or an implausible) resolution in their metadata

    def __post_init__(self) -> None:
        if self.target_mpp <= 0:
            raise ValueError(f"target_mpp must be positive, got {self.target_mpp}")
        if self.tile_size < 16:
            raise ValueError(f"tile_size must be at least 16 pixels, got {self.tile_size}")
        if not 0 <= self.overlap < self.tile_size:
            raise ValueError(f"overlap must be in [0, tile_size), got {self.overlap}")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ValueError(f"min_tissue must be in [0, 1], got {self.min_tissue}")
        if self.tissue_mpp <= 0:
            raise ValueError(f"tissue_mpp must be positive, got {self.tissue_mpp}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.slide_mpp is not None and self.slide_mpp <= 0:
            raise ValueError(f"slide_mpp must be positive, got {self.slide_mpp}")


Variant = Literal["daen", "seam", "cm", "sm", "cam", "histosegnet"]
BackboneName = Literal["resnet38", "resnet18", "resnet50"]


@dataclass(frozen=True)
class ModelConfig:
    """The CAM network: everything needed to rebuild it from a checkpoint.

    The model takes RGB in [0, 1] and normalises internally (``input_normalisation``), so every caller
    (datasets, evaluation, slide inference) feeds the same thing.
    """

    variant: Variant = "daen"
    backbone: BackboneName = "resnet38"
    num_classes: int = 4  # foreground tissue classes (LUAD: TE, NEC, LYM, TAS)
    class_set: str = "luad"  # names and colours: histo_daen.classes.class_set(class_set)
    width: float = 1.0  # channel multiplier of the backbone; < 1 gives test-sized models through the same code
    background_channel: bool = True  # fc8 has 1 + K outputs as in SEAM (channel 0 is never supervised)
    attention_reduction: int = 16  # CSM channel-attention MLP ratio (reference code: 16)
    spatial_kernel: Literal[3, 7] = 7  # CSM spatial-attention conv size
    spatial_pooling: Literal["concat", "sum"] = "concat"  # concat: reference code (CBAM); sum: the paper's formula
    input_normalisation: Literal["imagenet", "none"] = "imagenet"  # SEAM/DAEN: imagenet; MLPS: none
    input_mpp: float = 1.0  # microns per pixel of the patches the model was trained on (slide inference reads at it)
    input_size: int = 224  # patch side in pixels at input_mpp

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {self.num_classes}")
        if not 0 < self.width <= 4:
            raise ValueError(f"width must be in (0, 4], got {self.width}")
        if self.input_mpp <= 0:
            raise ValueError(f"input_mpp must be positive, got {self.input_mpp}")
