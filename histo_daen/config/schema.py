"""Frozen dataclasses for every command's configuration. Defaults live here and nowhere else.

Each section is owned by the package that uses it; ``configs/*.yaml`` list only what differs from these defaults.
Field comments give units; closed choices are ``Literal`` so the loader lists the valid values on a typo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "DemoConfig",
    "EvaluateConfig",
    "ImportConfig",
    "InferenceConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "SegmentConfig",
    "TileConfig",
    "TrainConfig",
    "TwinConfig",
]

Backend = Literal["auto", "openslide", "tiffslide"]

# Resolutions a setting may name, in microns per pixel: from beyond an oil-immersion scan (0.01) to a whole slide in a
# few hundred pixels (1000). Outside it the value is a unit mix-up (mm or nm for um), never a real resolution.
MPP_RANGE = (0.01, 1000.0)
# Largest side of a tile or model input: 8192 px RGB is 192 MiB per tile; past it no tile or batch fits anywhere.
MAX_TILE_SIZE = 8192


def _check_finite(cfg: Any) -> None:
    """Every float field (and every float in a tuple field) is finite.

    NaN passes every ``x > 0`` and ``0 <= x <= 1`` written as a negation, and inf every ``x >= 0``: without this
    check ``lr: .nan`` trains to a NaN checkpoint and ``--slide-mpp inf`` divides by zero. Called first by each
    ``__post_init__``, so YAML, ``KEY=VALUE``, command-line options and Python callers all get it.
    """
    for item in fields(cfg):
        value = getattr(cfg, item.name)
        for number in value if isinstance(value, tuple) else (value,):
            if isinstance(number, float) and not math.isfinite(number):
                raise ValueError(f"{item.name} must be a finite number, got {number}")


def _check_range(name: str, value: float, low: float, high: float, *, low_open: bool = False, unit: str = "") -> None:
    """``low <= value <= high`` (``low < value`` with ``low_open``), else a ValueError naming the field and range."""
    above_low = value > low if low_open else value >= low
    if not (above_low and value <= high):
        bracket = "(" if low_open else "["
        suffix = f" {unit}" if unit else ""
        raise ValueError(f"{name} must be in {bracket}{_number(low)}, {_number(high)}]{suffix}, got {_number(value)}")


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


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
    png_compression: int = 1  # 0-9; 1-3: Paeth + run-length deflate (fast), 4-9: libpng defaults at that level
    use_pyramid: bool = True  # read from the coarsest fine-enough pyramid level; false: level 0, shrunk (slower)
    backend: Backend = "auto"
    slide_mpp: float | None = None  # override for slides with no (or an implausible) resolution in their metadata

    def __post_init__(self) -> None:
        _check_finite(self)
        _check_range("target_mpp", self.target_mpp, *MPP_RANGE, unit="um/px")
        _check_range("tile_size", self.tile_size, 16, MAX_TILE_SIZE, unit="pixels")
        if not 0 <= self.overlap < self.tile_size:
            raise ValueError(f"overlap must be in [0, tile_size), got {self.overlap}")
        _check_range("min_tissue", self.min_tissue, 0.0, 1.0)
        _check_range("tissue_mpp", self.tissue_mpp, *MPP_RANGE, unit="um/px")
        _check_range("jpeg_quality", self.jpeg_quality, 1, 100)
        _check_range("png_compression", self.png_compression, 0, 9)
        if self.slide_mpp is not None:
            _check_range("slide_mpp", self.slide_mpp, *MPP_RANGE, unit="um/px")


Variant = Literal["daen", "seam", "cm", "sm", "cam", "histosegnet"]
BackboneName = Literal["resnet38", "resnet18", "resnet50"]  # built in; also "timm:<timm model name>"
AttentionForm = Literal["reference", "residual", "residual_centred"]


@dataclass(frozen=True)
class ModelConfig:
    """The CAM network: everything needed to rebuild it from a checkpoint.

    The model takes RGB in [0, 1] and normalises internally (``input_normalisation``), so every caller
    (datasets, evaluation, slide inference) feeds the same thing.
    """

    variant: Variant = "daen"
    backbone: str = "resnet38"  # resnet38 | resnet18 | resnet50 | timm:<name>, e.g. timm:vit_large_patch16_224
    num_classes: int = 4  # foreground tissue classes (LUAD: TE, NEC, LYM, TAS)
    class_set: str = "luad"  # names and colours: histo_daen.classes.class_set(class_set)
    width: float = 1.0  # channel multiplier of the backbone; < 1 gives test-sized models through the same code
    background_channel: bool = True  # fc8 has 1 + K outputs as in SEAM (channel 0 is never supervised)
    attention_reduction: int = 16  # CSM channel-attention MLP ratio (reference code: 16)
    spatial_kernel: Literal[3, 7] = 7  # CSM spatial-attention conv size
    spatial_pooling: Literal["concat", "sum"] = "concat"  # concat: reference code (CBAM); sum: the paper's formula
    input_normalisation: Literal["imagenet", "none", "custom"] = "imagenet"  # SEAM/DAEN: imagenet; MLPS: none
    input_mean: tuple[float, float, float] | None = None  # RGB mean in [0, 1] for "custom" (the weights' own)
    input_std: tuple[float, float, float] | None = None  # RGB std for "custom"
    timm_args: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model arguments (timm backbones)
    input_mpp: float = 1.0  # microns per pixel of the patches the model was trained on (slide inference reads at it)
    input_size: int = 224  # patch side in pixels at input_mpp
    # Reference behaviour (SEAM/DAEN code) vs alternatives; docs in histo_daen/models/cam_net.py.
    # null: decided by the training start (histo_daen/training/recipe.py: frozen with ImageNet weights, trained from
    # random weights); a model built outside training gets the reference value (true).
    freeze_batchnorm: bool | None = None  # BN in eval mode, affine frozen (reference section 1.3); False trains BN
    freeze_stem: bool | None = None  # no gradient to conv1a/b2* (ResNet38) or conv1/bn1/layer1 (torchvision)
    logits_pooling: Literal["stride8", "upsampled"] = "stride8"  # upsampled: SEAM's GAP of align_corners CAMs
    attention_position: Literal["pre_relu", "post_relu"] = "pre_relu"  # pre_relu: code (replaces the last ReLU)
    attention_lr_group: Literal["backbone", "new"] = "backbone"  # backbone: code (x1 LR); new: x10 with the heads
    pcm_output: Literal["replace", "add"] = "replace"  # replace: code (cam_rv); add: paper text (CAM + cam_rv)
    # How the CSM/CM/SM weights act on the features (histo_daen/models/attention.py): reference (the DAEN code),
    # residual, residual_centred; null: by the training start (the reference form outside training).
    attention_form: AttentionForm | None = None

    def __post_init__(self) -> None:
        _check_finite(self)
        _check_range("num_classes", self.num_classes, 1, 1000)
        _check_range("width", self.width, 0, 4, low_open=True)
        _check_range("input_mpp", self.input_mpp, *MPP_RANGE, unit="um/px")
        _check_range("input_size", self.input_size, 16, MAX_TILE_SIZE, unit="pixels")
        _check_range("attention_reduction", self.attention_reduction, 1, 1024)
        if self.input_normalisation == "custom":
            if self.input_mean is None or self.input_std is None:
                raise ValueError("input_normalisation 'custom' needs input_mean and input_std (RGB, in [0, 1] units)")
            if min(self.input_std) <= 0:
                raise ValueError(f"input_std must be positive, got {list(self.input_std)}")
        elif self.input_mean is not None or self.input_std is not None:
            raise ValueError("input_mean / input_std are used only with input_normalisation 'custom'")

    def with_reference_choices(self) -> ModelConfig:
        """This config with every start-dependent choice left null set to the reference code's value.

        Training decides them by its start first (``histo_daen.training.recipe``); a network built directly, or
        from a checkpoint written before a choice existed, is the reference network.
        """
        return replace(
            self,
            freeze_batchnorm=True if self.freeze_batchnorm is None else self.freeze_batchnorm,
            freeze_stem=True if self.freeze_stem is None else self.freeze_stem,
            attention_form="reference" if self.attention_form is None else self.attention_form,
        )

    def with_choices_of(self, other: ModelConfig) -> ModelConfig:
        """This config with every start-dependent choice left null taken from ``other`` (a built network's).

        A request that leaves a choice to the training start accepts whatever the start decided: comparing a
        requested config with a checkpoint's compares only what the request names.
        """
        return replace(
            self,
            freeze_batchnorm=other.freeze_batchnorm if self.freeze_batchnorm is None else self.freeze_batchnorm,
            freeze_stem=other.freeze_stem if self.freeze_stem is None else self.freeze_stem,
            attention_form=other.attention_form if self.attention_form is None else self.attention_form,
        )


# Input rescale factors of test-time views: SEAM's largest is 2; 4 already makes a 224-px patch a 896-px input
# (16x the pixels and activations of one view).
INFERENCE_SCALE_RANGE = (0.1, 4.0)

CamSource = Literal["refined", "raw"]
CamNormalisation = Literal["per_class", "global"]
LabelSource = Literal["predicted", "dataset", "masks"]
LabelViews = Literal["x1", "x1_flip", "all"]


@dataclass(frozen=True)
class InferenceConfig:
    """CAMs for a batch and the CAM -> label-map rule (reference.md §5); one section for evaluate and segment.

    The defaults: the PCM output summed over SEAM's test-time views (scales {0.5, 1, 1.5, 2} with horizontal
    flips), min-max per class; the classes a patch may contain predicted by the classifier on the x1 view (the
    patch at the model's own resolution) above the MLPS threshold 0.25; argmax over those tissue classes, nothing
    labelled exclude (as WSSS-Tissue's test). The MLPS protocol itself is ``cam_source: raw, scales: [1.0],
    flip: false, normalisation: global`` (configs/evaluate_mlps.yaml).
    """

    cam_source: CamSource = "refined"  # refined: PCM output (SEAM/DAEN); raw: fc8 CAMs (variants without PCM: raw)
    scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)  # input rescale factors, averaged after resizing back
    flip: bool = True  # also each scale mirrored left-right, then un-mirrored
    rotate: bool = False  # also 90, 180 and 270 degree rotations (histology has no up), then rotated back
    normalisation: CamNormalisation = "per_class"  # per_class: SEAM min-max per class; global: MLPS, one range
    label_source: LabelSource = "predicted"  # which classes may appear: predicted | dataset labels | masks (optimistic)
    label_threshold: float = 0.25  # classifier probability above which a class counts as present (MLPS: 0.25)
    # Which views' probabilities decide the predicted classes: x1 (the unscaled view, as MLPS), x1_flip (it and its
    # mirror, averaged) or all (every CAM view averaged, the former default; average-pooled scores change with the
    # scale, so wrong classes pass the threshold). Views missing from scales/flip are run for the labels only.
    label_views: LabelViews = "x1"
    background_alpha: float | None = None  # VOC-style: pixels whose best CAM is below alpha become exclude (SEAM 0.26)
    white_exclude: bool = False  # grey > white_grey_level in components >= white_min_pixels -> exclude (MLPS masks)
    white_grey_level: int = 200  # 0-255 grey level above which a pixel is white glass
    white_min_pixels: int = 50  # smaller white components (4-connected) stay tissue

    def __post_init__(self) -> None:
        _check_finite(self)
        low, high = INFERENCE_SCALE_RANGE
        if not self.scales or not all(low <= s <= high for s in self.scales):
            raise ValueError(
                f"scales must be a non-empty list of factors in [{low:g}, {high:g}], got {list(self.scales)}"
            )
        _check_range("label_threshold", self.label_threshold, 0.0, 1.0)
        if self.background_alpha is not None:
            _check_range("background_alpha", self.background_alpha, 0.0, 1.0)
        _check_range("white_grey_level", self.white_grey_level, 0, 255)
        _check_range("white_min_pixels", self.white_min_pixels, 1, 2**31)


# Patches or tiles in one forward pass; larger batches fit no accelerator made.
MAX_BATCH_SIZE = 4096


def _check_workers(workers: int) -> None:
    # Only the sign here: how many workers this machine can run is decided when they start (histo_daen.resources).
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0: work in this process), got {workers}")


@dataclass(frozen=True)
class EvaluateConfig:
    """``histo-daen evaluate``: score a checkpoint's tissue maps against the masks of a labelled split."""

    dataset: str | None = None  # luad | bcss; None: the dataset the checkpoint was trained on (tiles: luad)
    split: Literal["val", "test"] = "test"
    batch_size: int = 8  # patches per forward pass (each pass runs every scale/flip/rotation view)
    workers: int = 0  # data-loader processes reading the PNGs (0: in this process)
    save_masks: bool = False  # also write each predicted mask as a palette PNG under masks/
    n_examples: int = 6  # image | ground truth | prediction pictures written under examples/
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def __post_init__(self) -> None:
        _check_finite(self)
        _check_range("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _check_workers(self.workers)
        _check_range("n_examples", self.n_examples, 0, 10_000)


# --- segment (owned by histo_daen.inference.slide, histo_daen.export and histo_daen.pipeline) ---------------------


def _slide_inference() -> InferenceConfig:
    # One view per tile: a slide has thousands of tiles, and SEAM's 8 views (4 scales x flip) cost about 15 times
    # the compute of one. Set inference.scales / inference.flip to evaluate's values to match it exactly.
    # No white-glass rule: on slides the tissue mask decides what is tissue (reference.md §5.4); the rule would also
    # cut pale stroma and alveolar spaces out of the tissue. inference.white_exclude=true brings it back.
    return InferenceConfig(scales=(1.0,), flip=False, white_exclude=False)


@dataclass(frozen=True)
class SegmentConfig:
    """``histo-daen segment``: slides -> OME-Zarr tissue maps, QuPath GeoJSON, overview pictures, area tables.

    Tiles are read at the resolution the checkpoint was trained at (its ``input_mpp`` and ``input_size``); the map
    has one pixel per ``map_stride`` model pixels.
    """

    batch_size: int = 16  # tiles per forward pass
    workers: int = 2  # tile-reading threads, each with its own slide handle (0: read between batches)
    # Model pixels shared by neighbouring tiles; None: half the tile, so every pixel lies between two tiles on each
    # axis and the linear cross-fade leaves no line on the tile grid (twice the tiles of overlap 32 at 112 px).
    overlap: int | None = None
    # Model pixels at each tile edge that serve only as context: they are computed (and shape the rest of the tile)
    # but not blended into the map, whose every pixel then comes from tile outputs at least this far from an edge,
    # where zero padding and missing surroundings do not reach. None: 16, or a seventh of tiles under 112 px, in
    # whole map pixels (measured: no grid left in the map; 1.9x the tiles at 112 px, 1.4x at 224 px) with the
    # default overlap and slide stitching, else 0 (off). The default overlap is half the used part plus twice this.
    context: int | None = None
    # slide: every tile's CAMs (no per-tile normalisation, no per-tile class choice) and class probabilities are
    # blended first, then each pixel takes the best class among those the blended probabilities allow, each class's
    # scores in its own unit over the slide (linear cross-fade). tile: earlier versions (each tile normalised and
    # labelled alone, cosine cross-fade); with overlap=32 it gives their maps exactly.
    stitching: Literal["slide", "tile"] = "slide"
    min_region_um2: float = 0.0  # label clean-up: class regions smaller than this take their surroundings' class
    min_tissue: float = 0.05  # tiles with a smaller tissue fraction are skipped (their pixels: no tissue)
    tissue_mpp: float = 8.0  # microns per pixel of the thumbnail the tissue mask is computed on
    map_stride: int = 4  # model pixels per map pixel (map mpp = input_mpp x map_stride); divides tile and overlap
    chunk_size: int = 1024  # map chunk side in pixels; one band of this many rows is written at a time
    pyramid_levels: int | None = None  # map resolution levels; None: halve until the longest side is <= 1024 px
    ngff_version: Literal["0.4", "0.5"] = "0.4"  # 0.4 (Zarr v2): widest support, QuPath 0.6+; 0.5: Zarr v3
    amp: bool = True  # bf16 autocast on CUDA; CPU runs float32 unless cpu_bf16
    cpu_bf16: bool = False  # bf16 autocast on CPU too: ~2x faster on CPUs with AVX512-BF16/AMX, slower elsewhere
    backend: Backend = "auto"
    slide_mpp: float | None = None  # level-0 um/px for slides with no (or an implausible) resolution in metadata
    geojson: bool = True  # write map.geojson for QuPath
    geojson_object_type: Literal["annotation", "detection"] = "annotation"  # one per class | one per region
    geojson_simplify: float = 0.5  # simplification tolerance in map pixels (0: every pixel corner)
    geojson_min_area_um2: float = 500.0  # regions and holes smaller than this are dropped
    geojson_gzip: bool = False  # write map.geojson.gz instead (QuPath 0.4+ reads it)
    geojson_bounds_offset: bool = True  # subtract the slide's bounds-x/-y: QuPath crops such slides (MRXS) to them
    overview: bool = True  # write overview.png: the map over the slide thumbnail, areas in the legend
    overview_max_side: int = 1600  # longest side of the thumbnail in overview.png, pixels
    inference: InferenceConfig = field(default_factory=_slide_inference)

    def __post_init__(self) -> None:
        _check_finite(self)
        _check_range("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _check_workers(self.workers)
        if self.overlap is not None:  # None: half the model's tile
            _check_range("overlap", self.overlap, 0, MAX_TILE_SIZE, unit="pixels")
        if self.context is not None:  # None: chosen from the model's tile (default_context)
            _check_range("context", self.context, 0, MAX_TILE_SIZE, unit="pixels")
        _check_range("min_region_um2", self.min_region_um2, 0.0, 1e8, unit="um²")
        _check_range("min_tissue", self.min_tissue, 0.0, 1.0)
        _check_range("tissue_mpp", self.tissue_mpp, *MPP_RANGE, unit="um/px")
        _check_range("map_stride", self.map_stride, 1, 256)
        _check_range("chunk_size", self.chunk_size, 16, 16384, unit="pixels")
        if self.pyramid_levels is not None:
            _check_range("pyramid_levels", self.pyramid_levels, 1, 32)
        if self.slide_mpp is not None:
            _check_range("slide_mpp", self.slide_mpp, *MPP_RANGE, unit="um/px")
        _check_range("geojson_simplify", self.geojson_simplify, 0.0, 1000.0, unit="map pixels")
        if self.geojson_min_area_um2 < 0:
            raise ValueError(f"geojson_min_area_um2 must be >= 0, got {self.geojson_min_area_um2:g}")
        _check_range("overview_max_side", self.overview_max_side, 64, 16384, unit="pixels")


# --- training (owned by histo_daen.training and histo_daen.data) -------------------------------------------------

Objective = Literal["auto", "seam", "classification"]
ColourAugmentation = Literal["hed", "jitter", "none"]


@dataclass(frozen=True)
class DataConfig:
    """Where the training patches come from (``histo_daen.data``'s dataset registry) and how they are loaded."""

    dataset: str = "luad"  # registry name: luad (LUAD-HistoSeg), bcss (BCSS-WSSS), tiles (tiling manifest + CSV)
    root: Path | None = None  # dataset folder; for "tiles" the folder holding the tiling manifest.csv
    labels_csv: Path | None = None  # "tiles" only: CSV with a tile column and one 0/1 column per class code
    workers: int = 2  # data-loader processes per training process (0: load in the training process)
    input_scale: float = 1.0  # resize factor applied to every patch before the model (2.0: 224 patches -> 448)
    validate: bool = True  # check every file of the dataset (names, pairs, PNGs, mask values) before training
    verify: bool = False  # "tiles" only: also check each labelled tile's size and SHA-256 against its manifest

    def __post_init__(self) -> None:
        _check_finite(self)
        _check_workers(self.workers)
        _check_range("input_scale", self.input_scale, 0.1, 8.0)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentations, drawn once per patch from a generator keyed by (seed, epoch, patch index)."""

    flips: bool = True  # random left-right and up-down mirroring (tissue has no up)
    rotations: bool = True  # random multiples of 90 degrees
    colour: ColourAugmentation = "hed"  # hed: stain jitter in haematoxylin-eosin-DAB space; jitter: SEAM's
    hed_strength: float = 0.05  # hed: each stain is scaled by 1 +- s and shifted by +- s (Tellez et al. 2018)
    brightness: float = 0.3  # jitter: SEAM's ColorJitter(0.3, 0.3, 0.3, 0.1)
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.1  # fraction of the hue circle, in [0, 0.5]

    def __post_init__(self) -> None:
        _check_finite(self)
        if not 0.0 <= self.hed_strength < 1.0:
            raise ValueError(f"hed_strength must be in [0, 1), got {self.hed_strength}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")


@dataclass(frozen=True)
class TwinConfig:
    """The transform A of SEAM's equivariant twin branch (reference.md §3.2): img2 = A(img1), compared with A(CAM1).

    SEAM rescales 448 crops by a fixed 0.3 (134 px in, 17x17 CAMs). A 224 LUAD patch at 0.3 is 67 px in and a
    9x9 CAM, too coarse to compare; the default 0.5 gives 112 px in and 14x14 CAMs, close to SEAM's geometry.
    The reference geometry is kept in configs/luad_*_reference.yaml (input_scale 2.0, scale 0.3).
    """

    scale: float = 0.5  # rescale factor of the twin branch's input
    flips: bool = False  # also a random mirror per patch (an equivariance SEAM does not use)
    rotations: bool = False  # also a random multiple of 90 degrees per patch

    def __post_init__(self) -> None:
        _check_finite(self)
        if not 0.1 <= self.scale <= 2.0:
            raise ValueError(f"twin scale must be in [0.1, 2], got {self.scale}")


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (reference.md §3.3; SEAM weighs every term 1). A weight of 0 switches a term off."""

    objective: Objective = "auto"  # seam: twin branch + ER/ECR (needs a PCM); classification: MLSM only; auto: by model
    classification_weight: float = 1.0  # multilabel soft margin over the foreground classes, both branches averaged
    equivariant_weight: float = 1.0  # ER: L1 between A(CAM(x)) and CAM(A(x))
    cross_equivariant_weight: float = 1.0  # ECR: PCM output of one branch against the other branch's CAM
    ecr_top_fraction: float = 0.2  # ECR averages the hardest fraction of the C x h x w entries (SEAM: 0.2)
    rvmin_weight: float = 1.0  # SEAM's bottom-quarter suppression of the PCM output (in code, not in the papers)
    rvmin_fraction: float = 0.25  # fraction of pixels whose foreground maximum rvmin pushes to zero (SEAM: 1/4)

    def __post_init__(self) -> None:
        _check_finite(self)
        for name in ("classification_weight", "equivariant_weight", "cross_equivariant_weight", "rvmin_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.ecr_top_fraction <= 1.0:
            raise ValueError(f"ecr_top_fraction must be in (0, 1], got {self.ecr_top_fraction}")
        if not 0.0 < self.rvmin_fraction <= 1.0:
            raise ValueError(f"rvmin_fraction must be in (0, 1], got {self.rvmin_fraction}")


@dataclass(frozen=True)
class OptimConfig:
    """SGD with the poly schedule and SEAM's learning-rate groups (reference.md §3.4).

    ``batch_size`` is the global batch of one optimiser step: it is split over the torchrun processes and the
    ``accumulation_steps`` micro-batches, so a config means the same training on one CPU or eight GPUs.
    """

    lr: float = 0.01  # base learning rate (backbone weights); biases x2, new layers x10, new biases x20
    new_layer_lr_multiplier: float = 10.0  # heads trained from scratch (fc8, PCM): SEAM 10
    # null: by the training start (histo_daen/training/recipe.py): the reference code's 5e-4 (its SGD(params, lr,
    # weight_decay) put the decay into momentum) with ImageNet weights, 0.9 from random weights
    momentum: float | None = None
    weight_decay: float = 5e-4  # on weights; biases get none (SEAM)
    poly_power: float = 0.9  # lr_g = lr0_g * (1 - step / max_steps) ** poly_power
    batch_size: int = 8  # patches per optimiser step, over all processes and micro-batches
    accumulation_steps: int = 1  # micro-batches per optimiser step (gradient accumulation)
    epochs: int = 8
    max_steps: int | None = None  # stop (and end the schedule) after this many steps, for short runs

    def __post_init__(self) -> None:
        _check_finite(self)
        # Above 10 no network trains: the first step already overflows (SEAM: 0.01; new layers get x10).
        _check_range("lr", self.lr, 0.0, 10.0, low_open=True)
        _check_range("new_layer_lr_multiplier", self.new_layer_lr_multiplier, 0.0, 1000.0, low_open=True)
        if self.momentum is not None:
            _check_range("momentum", self.momentum, 0.0, 0.999)  # 1 and above: the velocity never decays
        _check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        _check_range("poly_power", self.poly_power, 0.0, 100.0)
        _check_range("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _check_range("accumulation_steps", self.accumulation_steps, 1, MAX_BATCH_SIZE)
        _check_range("epochs", self.epochs, 1, 1_000_000)
        if self.batch_size % self.accumulation_steps:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by accumulation_steps {self.accumulation_steps}"
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1 or null, got {self.max_steps}")


@dataclass(frozen=True)
class TrainConfig:
    """``histo-daen train``: everything that decides a training run; stored in config.yaml and every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    twin: TwinConfig = field(default_factory=TwinConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    pretrained: Path | None = None  # local backbone weights (.params, .pth or a histo-daen .pt); none: random init
    # The settings left null above follow the start (histo_daen/training/recipe.py): auto = reference with external
    # pretrained weights (ImageNet, SEAM, MLPS), scratch from random weights or a histo-daen run trained from scratch.
    recipe: Literal["auto", "reference", "scratch"] = "auto"
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA (losses in float32); CPU runs float32 unless cpu_bf16
    cpu_bf16: bool = False  # bf16 autocast on CPU too: ~2x faster on CPUs with AVX512-BF16/AMX, slower elsewhere
    deterministic: bool = False  # torch.use_deterministic_algorithms(True) (slower on GPU)
    checkpoint_every: int = 500  # optimiser steps between last.pt writes; last.pt is also written at each epoch end
    log_every: int = 10  # optimiser steps between metrics.jsonl lines

    def __post_init__(self) -> None:
        _check_range("seed", self.seed, 0, 2**32 - 1)  # NumPy's seed range
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be at least 1")


@dataclass(frozen=True)
class ImportConfig:
    """``histo-daen import-checkpoint``: a SEAM or MLPS stage-1 checkpoint -> a histo-daen checkpoint.

    The rest of the model config (backbone, width, class count, background channel) is read from the file.
    """

    classes: str | None = None  # required: a class-set name (luad, bcss) or NAME,NAME,... in fc8 order (no background)
    variant: Literal["auto", "seam", "cam"] = "auto"  # auto: seam for SEAM files (PCM kept), cam for MLPS files
    input_normalisation: Literal["auto", "imagenet", "none"] = "auto"  # auto: SEAM imagenet, MLPS none (as trained)


@dataclass(frozen=True)
class DemoConfig:
    """``histo-daen demo``: how big the built-in demo's slide, data and training are.

    The defaults fit ``make demo`` in about 3 minutes on 2 idle CPU cores; tests shrink every size through the same
    fields (``slide_size=[1536,1024] n_train=16 ...``).
    """

    slide_size: tuple[int, int] = (4096, 3072)  # the synthetic slide's level-0 width x height in pixels (0.5 um/px)
    n_train: int = 320  # patches of the synthetic LUAD-HistoSeg dataset per split
    n_val: int = 48
    n_test: int = 48
    dataset_seed: int = 1
    variants: tuple[str, ...] = ("daen", "seam")  # trained, evaluated, compared; the best on val segments the slides
    train_config: str = "demo"  # the training recipe: a shipped config's name or a YAML file
    train_overrides: tuple[str, ...] = ()  # section.key=value on top of train_config, e.g. optim.max_steps=2
    segment_overrides: tuple[str, ...] = ()  # key=value on top of the segment defaults, e.g. chunk_size=64
    # torch threads for training and inference, pinned: the same run gives other figures with another thread count
    # (the order of floating-point sums changes), so the core count or OMP_NUM_THREADS would change the results
    threads: int = 2

    def __post_init__(self) -> None:
        if min(self.slide_size) < 256:
            raise ValueError(f"slide_size must be at least 256 x 256 pixels, got {list(self.slide_size)}")
        if self.n_train < 1 or self.n_val < 1 or self.n_test < 1:
            raise ValueError("n_train, n_val and n_test must be at least 1")
        if not self.variants:
            raise ValueError("variants must name at least one method")
        if not 1 <= self.threads <= 256:
            raise ValueError(f"threads must be in [1, 256], got {self.threads}")
