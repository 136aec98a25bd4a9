"""Frozen dataclasses for every command's configuration. Defaults live here and nowhere else.

Each section is owned by the package that uses it; ``configs/*.yaml`` list only what differs from these defaults.
Field comments give units; closed choices are ``Literal`` so the loader lists the valid values on a typo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["EvaluateConfig", "InferenceConfig", "ModelConfig", "TileConfig"]

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


CamSource = Literal["refined", "raw"]
CamNormalisation = Literal["per_class", "global"]
LabelSource = Literal["predicted", "dataset", "masks"]


@dataclass(frozen=True)
class InferenceConfig:
    """CAMs for a batch and the CAM -> label-map rule (reference.md §5); one section for evaluate and segment.

    The defaults are SEAM's test-time setting on the PCM output (scales {0.5, 1, 1.5, 2} with horizontal flips),
    image-level labels predicted by the classifier at the MLPS threshold (the only source on unlabelled test
    patches and slides), argmax over the tissue classes and white glass labelled exclude (MLPS, §5.3).
    The MLPS protocol itself is ``cam_source: raw, scales: [1.0], flip: false, normalisation: global``.
    """

    cam_source: CamSource = "refined"  # refined: PCM output (SEAM/DAEN); raw: fc8 CAMs (variants without PCM: raw)
    scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)  # input rescale factors, averaged after resizing back
    flip: bool = True  # also each scale mirrored left-right, then un-mirrored
    rotate: bool = False  # also 90, 180 and 270 degree rotations (histology has no up), then rotated back
    normalisation: CamNormalisation = "per_class"  # per_class: SEAM min-max per class; global: MLPS, one range
    label_source: LabelSource = "predicted"  # which classes may appear: predicted | dataset labels | masks (optimistic)
    label_threshold: float = 0.25  # classifier probability above which a class counts as present (MLPS: 0.25)
    background_alpha: float | None = None  # VOC-style: pixels whose best CAM is below alpha become exclude (SEAM 0.26)
    white_exclude: bool = True  # grey > white_grey_level in components >= white_min_pixels -> exclude (MLPS)
    white_grey_level: int = 200  # 0-255 grey level above which a pixel is white glass
    white_min_pixels: int = 50  # smaller white components (4-connected) stay tissue

    def __post_init__(self) -> None:
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be a non-empty list of positive factors, got {list(self.scales)}")
        if not 0.0 <= self.label_threshold <= 1.0:
            raise ValueError(f"label_threshold must be in [0, 1], got {self.label_threshold}")
        if self.background_alpha is not None and not 0.0 <= self.background_alpha <= 1.0:
            raise ValueError(f"background_alpha must be in [0, 1] or null, got {self.background_alpha}")
        if not 0 <= self.white_grey_level <= 255:
            raise ValueError(f"white_grey_level must be in [0, 255], got {self.white_grey_level}")
        if self.white_min_pixels < 1:
            raise ValueError(f"white_min_pixels must be at least 1, got {self.white_min_pixels}")


@dataclass(frozen=True)
class EvaluateConfig:
    """``histo-daen evaluate``: score a checkpoint's tissue maps against the masks of a labelled split."""

    split: Literal["val", "test"] = "test"
    batch_size: int = 8  # patches per forward pass (each pass runs every scale/flip/rotation view)
    workers: int = 0  # data-loader processes reading the PNGs (0: in this process)
    save_masks: bool = False  # also write each predicted mask as a palette PNG under masks/
    n_examples: int = 6  # image | ground truth | prediction pictures written under examples/
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.n_examples < 0:
            raise ValueError(f"n_examples must be >= 0, got {self.n_examples}")
