"""Streaming whole-slide inference: tissue tiles -> model -> overlap stitching -> a map written band by band.

The slide is never held in memory, nor is the map: background threads read tissue tiles at the model's resolution
(the ``input_mpp`` its checkpoint records) a few batches ahead, the model turns each batch into class scores (bf16
autocast on CUDA), the scores are averaged down to the map's resolution on the model's device, and a
:class:`~histo_daen.inference.stitching.BandStitcher` blends them into the rows of one band at a time. Each finished
band goes to a :class:`MapSink` (the OME-Zarr writer of :mod:`histo_daen.export.zarr_map`, wired in by
:mod:`histo_daen.pipeline`; this module writes no file format itself) together with its label map: the best class
on tissue, 0 ("no tissue") outside the tissue mask, on white glass inside a tile, and where no tile reached.

Slide-consistent scores (``SegmentConfig.stitching="slide"``, the default). A region must get one class across a
tile border, so nothing that depends on one tile alone decides a pixel: the tiles' CAMs are blended as the network
gives them (:func:`~histo_daen.inference.cams.compute_tile_scores`: no per-tile min-max, no per-tile class mask),
and so are the tiles' class probabilities, as extra channels with the same window. A pixel may take a class whose
blended probability exceeds ``inference.label_threshold`` (the MLPS rule, applied to the 2 x 2 tiles around the
pixel, 1.5 tiles across, instead of to one tile), the best such class by blended score, each class's score
measured in its own unit: its 99th percentile over the tissue of ``CALIBRATION_TILES`` tiles sampled evenly over
the slide before the map is made (predictors that set ``calibrate_classes``, as :class:`CamPredictor` does for
slide stitching). Without it a class the network scores low everywhere (the per-tile rescaling used to hide this)
loses its regions on every slide; the sampled tiles' outputs are kept and stitched in their turn, so no tile is
computed twice, and a resumed run samples the same tiles, so its units are the same. Tiles overlap by half
(``overlap=None``) and cross-fade linearly, so where neighbouring tiles still disagree the change of class falls
anywhere between their centres, not on a line of the tile grid. ``stitching="tile"`` keeps the earlier path (each
tile's CAMs normalised and masked alone by :func:`~histo_daen.inference.cams.compute_cams`, cosine cross-fade).
Optionally :mod:`~histo_daen.inference.label_cleanup` removes class regions below ``min_region_um2``, one band
behind the stitching; the scores stay the raw blended ones.

Resume: a sink that already holds ``bands_done`` bands makes :func:`segment_slide` start at the first tile that
touches the next band (the band before it, when the clean-up needs its rows). Batches are cut at fixed positions
of the tile list (less the sampled tiles), so every tile is computed in the same batch as in an uninterrupted run,
and the blended sums of the remaining bands are bit-identical to it.

Geometry. A tile is ``tile_size`` pixels at the model's mpp; neighbours share ``overlap`` pixels. A map pixel is
``map_stride`` model pixels, so a tile is ``tile_size / map_stride`` map pixels and map pixel ``(r, c)`` covers
level-0 pixels ``[c * d, (c + 1) * d) x [r * d, (r + 1) * d)`` with ``d = map_downsample = input_mpp * map_stride
/ mpp0``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from histo_daen.config.schema import InferenceConfig, SegmentConfig
from histo_daen.devices import autocast_settings
from histo_daen.errors import ConfigError, NoTissueError
from histo_daen.inference.cams import cam_kind, compute_cams, compute_tile_scores
from histo_daen.inference.label_cleanup import BandCleaner
from histo_daen.inference.labels import white_glass_mask
from histo_daen.inference.stitching import (
    BandStitcher,
    FinishedBand,
    RampProfile,
    blend_window,
    map_values_from_scores,
)
from histo_daen.models.cam_net import CamNet
from histo_daen.progress import progress_bar
from histo_daen.slide import Slide, SlideSource
from histo_daen.tiling.grid import GridHints, Tile, read_tile, tile_grid

__all__ = [
    "CamPredictor",
    "MapSink",
    "PlannedTile",
    "SegmentStats",
    "SlideMapPlan",
    "TileOutput",
    "TilePredictor",
    "plan_slide_map",
    "segment_slide",
]

logger = logging.getLogger(__name__)

PREFETCH_BATCHES = 2  # batches read ahead per reader thread: enough to hide reads, little memory
GLASS_FRACTION = 0.5  # a map pixel is glass when more than this share of its model pixels is white glass
DEFAULT_PRESENCE_THRESHOLD = 0.25  # MLPS's label threshold, for predictors that do not name theirs
CALIBRATION_TILES = 64  # tiles sampled evenly over the slide for each class's score scale (calibrating predictors)
CALIBRATION_QUANTILE = 99.0  # percentile of a class's scores over the sample's tissue that becomes its unit


@dataclass(frozen=True)
class TileOutput:
    """What a predictor returns for a batch of tiles.

    Attributes:
        scores: (B, C, H, W) float in [0, 1] at the tiles' resolution (or any size the map stride divides).
        glass: (B, H, W) bool, True on white glass inside the tile, or None when the predictor does not say.
        presence: (B, C) float in [0, 1], each tile's class probabilities, or None. Blended like the scores, they
            decide which classes a map pixel may take: those above the predictor's ``presence_threshold`` (all
            classes where none is). None: every class may win everywhere.
    """

    scores: torch.Tensor
    glass: torch.Tensor | None = None
    presence: torch.Tensor | None = None


class TilePredictor(Protocol):
    """Anything that maps a batch of tiles to per-pixel scores: a CAM network (:class:`CamPredictor`) or a test
    oracle (an identity "model" whose scores are the tile's own RGB channels)."""

    n_channels: int

    def __call__(self, images: torch.Tensor) -> TileOutput:
        """(B, 3, H, W) float32 RGB in [0, 1] on the model's device -> :class:`TileOutput`."""
        ...


class CamPredictor:
    """Scores of a CAM network for slide tiles, with white glass from the MLPS rule.

    ``stitching="slide"``: :func:`compute_tile_scores` (CAMs as the network gives them) and the tiles' class
    probabilities as ``presence``, for the slide-level decision after blending. ``"tile"``: :func:`compute_cams`,
    as evaluation does, with the classes of each tile predicted by its classifier (slides have no labels: the MLPS
    protocol) and its CAMs normalised per tile. HistoSegNet takes the ``"tile"`` path either way (its Grad-CAMs and
    background map are defined per image).

    Args:
        model: a CAM network (or HistoSegNet) in eval mode on the device the tiles will be on.
        n_classes: K, its number of tissue classes.
        settings: the ``inference`` section; ``label_source`` must be "predicted".
        stitching: "slide" or "tile" (``SegmentConfig.stitching``).
    """

    def __init__(self, model: CamNet, n_classes: int, settings: InferenceConfig, *, stitching: str = "slide") -> None:
        if settings.label_source != "predicted":
            raise ConfigError(
                f"inference.label_source={settings.label_source!r} needs labelled patches; slides have none, "
                "so segment uses the classifier's predictions: set inference.label_source=predicted"
            )
        if stitching not in ("slide", "tile"):
            raise ConfigError(f"segment.stitching={stitching!r} is not one of slide, tile")
        self.model = model
        self.n_channels = n_classes
        self.settings = settings
        self.presence_threshold = settings.label_threshold
        self.slide_scores = stitching == "slide" and cam_kind(model, settings) != "grad-cam"
        # Slide-level class scales (segment_slide): the per-tile rescaling is gone, so a class the network scores
        # low everywhere would never win; its scores are measured against its own high values over the slide.
        self.calibrate_classes = self.slide_scores

    def __call__(self, images: torch.Tensor) -> TileOutput:
        glass = None
        if self.settings.white_exclude:
            glass = white_glass_mask(
                images, grey_level=self.settings.white_grey_level, min_pixels=self.settings.white_min_pixels
            )
        if self.slide_scores:
            tile = compute_tile_scores(self.model, images, settings=self.settings)
            return TileOutput(scores=tile.scores, glass=glass, presence=tile.probabilities)
        result = compute_cams(self.model, images, settings=self.settings)
        if result.background is not None:  # HistoSegNet: its background map wins over every class there
            beaten = result.background[:, 0] > result.cams.amax(dim=1)
            glass = beaten if glass is None else glass | beaten
        return TileOutput(scores=result.cams, glass=glass)


class MapSink(Protocol):
    """Where finished bands go (``histo_daen.export.zarr_map.TissueMapWriter`` implements it)."""

    @property
    def band_height(self) -> int: ...

    @property
    def n_bands(self) -> int: ...

    @property
    def bands_done(self) -> int: ...

    def write_band(self, index: int, scores: np.ndarray, labels: np.ndarray) -> None:
        """Band ``index``: scores (C, h, W) float32, labels (h, W) uint8 map values."""
        ...


@dataclass(frozen=True)
class PlannedTile:
    """A tile of the plan: the tiler's tile and where its output lands in the map.

    Attributes:
        tile: the tiler's :class:`~histo_daen.tiling.Tile` (level-0 box, pyramid level, tissue fraction).
        y0, x0: map pixel of the tile output's top-left corner.
    """

    tile: Tile
    y0: int
    x0: int


@dataclass(frozen=True)
class SlideMapPlan:
    """Everything :func:`segment_slide` needs, decided before any model runs.

    Attributes:
        source: how reader threads open the slide.
        identity: ``Slide.identity()`` of the slide.
        mpp0: level-0 microns per pixel.
        model_mpp: microns per pixel of the tiles (the model's ``input_mpp``).
        tile_size: tile side in model pixels.
        overlap: model pixels shared by neighbouring tiles.
        map_stride: model pixels per map pixel.
        shape_hw: (height, width) of the map in map pixels.
        tiles: the tissue tiles in row order (top row, then column).
        tissue_mask: (h, w) bool tissue mask of the slide, from the tiler.
        tissue_downsample: level-0 pixels per tissue-mask pixel.
        ramp: the blending window's ramps, "linear" (slide stitching) or "cosine" (tile stitching).
        context: model pixels at each tile edge computed but not blended (``SegmentConfig.context``).
        min_region_pixels: class regions with fewer map pixels are cleaned up (0 or 1: no clean-up).
    """

    source: SlideSource
    identity: dict[str, Any]
    mpp0: float
    model_mpp: float
    tile_size: int
    overlap: int
    map_stride: int
    shape_hw: tuple[int, int]
    tiles: tuple[PlannedTile, ...]
    tissue_mask: np.ndarray
    tissue_downsample: float
    ramp: RampProfile = "linear"
    context: int = 0
    min_region_pixels: int = 0

    @property
    def tile_step(self) -> int:
        """Tile pitch in map pixels (the period of a tile grid in the map)."""
        return (self.tile_size - self.overlap) // self.map_stride

    @property
    def map_downsample(self) -> float:
        """Level-0 pixels per map pixel."""
        return self.model_mpp * self.map_stride / self.mpp0

    @property
    def map_mpp(self) -> float:
        return self.model_mpp * self.map_stride

    @property
    def tile_map_size(self) -> int:
        """Tile side in map pixels."""
        return self.tile_size // self.map_stride

    def tissue_rows(self, y0: int, y1: int) -> np.ndarray:
        """(y1 - y0, W) bool: the tissue mask at the centres of map rows ``y0 .. y1 - 1`` (nearest)."""
        height, width = self.tissue_mask.shape
        d = self.map_downsample / self.tissue_downsample  # tissue-mask pixels per map pixel
        rows = np.minimum(((np.arange(y0, y1) + 0.5) * d).astype(np.int64), height - 1)
        cols = np.minimum(((np.arange(self.shape_hw[1]) + 0.5) * d).astype(np.int64), width - 1)
        return self.tissue_mask[np.ix_(rows, cols)]


DEFAULT_CONTEXT = 16  # model pixels; measured in bench_slide_maps (README "Slide maps without tile seams")


def default_context(tile_size: int, map_stride: int) -> int:
    """Context of ``context: null``: 16 model pixels, a seventh of tiles under 112 px, in whole map pixels.

    A tile's outputs near its edge (zero padding, no surroundings) disagree with its neighbours' for the same tissue;
    16 px left no grid in any benchmark map of 112-px tiles and costs 1.9x their tiles (1.4x at 224 px). Small tiles
    keep most of their area for the map.
    """
    return min(DEFAULT_CONTEXT, tile_size // 7) // map_stride * map_stride


def map_geometry(tile_size: int, config: SegmentConfig) -> tuple[int, int]:
    """``(context, overlap)`` in model pixels for tiles of ``tile_size``: ``config``'s, or the defaults they imply.

    Context None: :func:`default_context` with the default overlap and slide stitching, else 0. Overlap None: half
    the used part (the tile less twice the context) in whole map pixels, plus twice the context. ``segment_cohort``
    calls it once per checkpoint, before any slide is read, so bad settings fail the run, not each slide.

    Raises:
        ConfigError: the context leaves no used part, the map stride does not divide tile, overlap and context, the
            overlap is not smaller than the tile, or the used parts of neighbouring tiles would not meet.
    """
    stride = config.map_stride
    context = config.context
    if context is None:  # measured with the default overlap only; the user's own overlap keeps its meaning
        default = config.stitching == "slide" and config.overlap is None
        context = default_context(tile_size, stride) if default else 0
    if 2 * context >= tile_size:
        raise ConfigError(f"context={context} must be less than half the model's tile size {tile_size}")
    used = tile_size - 2 * context  # the part of a tile blended into the map
    overlap = config.overlap if config.overlap is not None else 2 * context + used // 2 // stride * stride
    if tile_size % stride or overlap % stride or context % stride:
        raise ConfigError(
            f"map_stride={stride} must divide the model's tile size ({tile_size}), overlap ({overlap}) and "
            f"context ({context}), so tiles land on whole map pixels"
        )
    if overlap >= tile_size:
        raise ConfigError(f"overlap={overlap} must be smaller than the model's tile size {tile_size}")
    if overlap < 2 * context:
        raise ConfigError(
            f"overlap={overlap} must be at least twice context={context}: the used parts of neighbouring tiles "
            "would not meet"
        )
    return context, overlap


def plan_slide_map(slide: Slide, *, model_mpp: float, tile_size: int, config: SegmentConfig) -> SlideMapPlan:
    """Find the tissue tiles of a slide at the model's resolution and lay them out on the map grid.

    Args:
        slide: an open slide.
        model_mpp: microns per pixel the model was trained at (``ModelConfig.input_mpp``).
        tile_size: tile side in model pixels (``ModelConfig.input_size``).
        config: overlap and context (:func:`map_geometry`), map stride, tissue settings, stitching, clean-up.

    Raises:
        MissingResolutionError: the slide has no usable mpp (pass ``--slide-mpp``).
        NoTissueError: no tile holds enough tissue.
        ConfigError: overlap, context and map stride do not fit the tile (:func:`map_geometry`).
    """
    context, overlap = map_geometry(tile_size, config)
    mpp0 = slide.require_mpp()
    grid = tile_grid(
        slide,
        target_mpp=model_mpp,
        tile_size=tile_size,
        overlap=overlap,
        min_tissue=config.min_tissue,
        tissue_mpp=config.tissue_mpp,
        hints=GridHints(
            too_small=f"The model reads {tile_size}-px tiles at {model_mpp:g} um/px: check --slide-mpp.",
            too_many=f"The model reads {tile_size}-px tiles at {model_mpp:g} um/px: check --slide-mpp, or lower "
            "overlap.",
        ),
    )
    if not grid.tiles:
        raise NoTissueError(
            slide.path,
            f"no tile of {tile_size} px at {model_mpp:g} um/px holds {config.min_tissue:.0%} tissue",
            "Check that the slide shows stained tissue, or lower min_tissue "
            f"(e.g. min_tissue={config.min_tissue / 2:g}).",
        )
    map_downsample = model_mpp * config.map_stride / mpp0
    map_mpp = model_mpp * config.map_stride
    width0, height0 = slide.dimensions
    shape_hw = (math.ceil(height0 / map_downsample), math.ceil(width0 / map_downsample))
    step = (tile_size - overlap) // config.map_stride  # tile pitch in map pixels
    planned = sorted(
        (PlannedTile(tile, tile.row * step, tile.col * step) for tile in grid.tiles),
        key=lambda planned_tile: (planned_tile.y0, planned_tile.x0),
    )
    return SlideMapPlan(
        source=slide.source(),
        identity=slide.identity(),
        mpp0=mpp0,
        model_mpp=model_mpp,
        tile_size=tile_size,
        overlap=overlap,
        map_stride=config.map_stride,
        shape_hw=shape_hw,
        tiles=tuple(planned),
        tissue_mask=grid.tissue_mask,
        tissue_downsample=grid.tissue_downsample,
        ramp="linear" if config.stitching == "slide" else "cosine",
        context=context,
        min_region_pixels=math.ceil(config.min_region_um2 / map_mpp**2),
    )


@dataclass(frozen=True)
class SegmentStats:
    """What a :func:`segment_slide` call did.

    Attributes:
        n_tiles: tissue tiles of the slide.
        n_tiles_run: tiles this call sent through the model (fewer when resuming).
        n_bands_written: bands this call wrote.
        seconds: wall time of the call.
        model_seconds: time spent in the predictor (device synchronised), the floor of ``seconds``.
    """

    n_tiles: int
    n_tiles_run: int
    n_bands_written: int
    seconds: float
    model_seconds: float

    @property
    def tiles_per_second(self) -> float:
        return self.n_tiles_run / self.seconds if self.seconds > 0 else 0.0


class _TileReader:
    """Reads batches of tiles in background threads, each thread with its own slide handle, in order."""

    def __init__(self, plan: SlideMapPlan, workers: int) -> None:
        self._plan = plan
        self._workers = workers
        self._local = threading.local()
        self._handles: list[Slide] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tile-reader") if workers else None

    def _slide(self) -> Slide:
        slide = getattr(self._local, "slide", None)
        if slide is None:
            slide = self._plan.source.open()
            self._local.slide = slide
            with self._lock:
                self._handles.append(slide)
        return slide

    def read(self, tiles: Sequence[PlannedTile]) -> np.ndarray:
        """(B, tile_size, tile_size, 3) uint8 RGB."""
        if not tiles:
            return np.zeros((0, self._plan.tile_size, self._plan.tile_size, 3), dtype=np.uint8)
        slide = self._slide()
        return np.stack([read_tile(slide, planned.tile, self._plan.tile_size) for planned in tiles])

    def batches(self, batches: Sequence[Sequence[PlannedTile]]) -> Iterator[np.ndarray]:
        pool = self._pool
        if pool is None:
            for batch in batches:
                yield self.read(batch)
            return
        pending: deque[Future[np.ndarray]] = deque()
        upcoming = iter(batches)
        for batch in upcoming:
            pending.append(pool.submit(self.read, batch))
            if len(pending) >= PREFETCH_BATCHES * self._workers:
                break
        while pending:
            images = pending.popleft().result()
            next_batch = next(upcoming, None)
            if next_batch is not None:
                pending.append(pool.submit(self.read, next_batch))
            yield images

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for slide in self._handles:
            slide.close()


def _to_map_resolution(output: TileOutput, map_stride: int, n_channels: int) -> torch.Tensor:
    """(B, C + 1 [+ C], h, w) float32 on the output's device: scores averaged to map pixels, the glass fraction,
    then each tile's presence probabilities over the whole tile when the predictor gives them."""
    scores = output.scores.float()
    if scores.ndim != 4 or scores.shape[1] != n_channels:
        raise ValueError(f"predictor returned scores {tuple(scores.shape)}, expected (B, {n_channels}, H, W)")
    glass = torch.zeros_like(scores[:, :1]) if output.glass is None else output.glass[:, None].to(scores.dtype)
    stacked = torch.cat([scores, glass], dim=1)
    pooled = F.avg_pool2d(stacked, map_stride) if map_stride > 1 else stacked
    if output.presence is None:
        return pooled
    presence = output.presence.float()
    if tuple(presence.shape) != (scores.shape[0], n_channels):
        raise ValueError(
            f"predictor returned presence {tuple(presence.shape)}, expected ({scores.shape[0]}, {n_channels})"
        )
    return torch.cat([pooled, presence[:, :, None, None].expand(-1, -1, *pooled.shape[-2:])], dim=1)


CALIBRATION_FLOOR = 0.1  # no class's unit is below this share of the largest class's unit


def _class_scale(
    plan: SlideMapPlan, outputs: Sequence[tuple[PlannedTile, np.ndarray]], n_channels: int
) -> np.ndarray | None:
    """Each class's score unit over the tissue of some tiles: its ``CALIBRATION_QUANTILE`` percentile, at least
    ``CALIBRATION_FLOOR`` of the largest class's (a class the network never scores is not blown up to the others').

    Args:
        plan: the slide's plan (tissue mask, map size).
        outputs: tiles and their map-resolution outputs (C', tile, tile): K scores, then the glass share.
        n_channels: K.

    Returns:
        (K,) float32 units, or None when the tiles hold no tissue pixel or every score is 0.
    """
    height, width = plan.shape_hw
    values: list[np.ndarray] = []
    for planned, output in outputs:
        y0, x0 = max(planned.y0, 0), max(planned.x0, 0)
        y1, x1 = min(planned.y0 + output.shape[1], height), min(planned.x0 + output.shape[2], width)
        if y1 <= y0 or x1 <= x0:
            continue
        rows = slice(y0 - planned.y0, y1 - planned.y0)
        cols = slice(x0 - planned.x0, x1 - planned.x0)
        tissue = plan.tissue_rows(y0, y1)[:, x0:x1] & (output[n_channels, rows, cols] <= GLASS_FRACTION)
        values.append(output[:n_channels, rows, cols][:, tissue])
    if not values:
        return None
    pooled = np.concatenate(values, axis=1)
    if pooled.shape[1] == 0:
        return None
    units = np.percentile(pooled, CALIBRATION_QUANTILE, axis=1)
    if not units.max() > 0:
        return None
    return np.maximum(units, CALIBRATION_FLOOR * units.max()).astype(np.float32)


def segment_slide(
    plan: SlideMapPlan,
    sink: MapSink,
    predictor: TilePredictor | Callable[[torch.Tensor], TileOutput],
    *,
    device: torch.device,
    batch_size: int = 16,
    workers: int = 2,
    amp: bool = True,
    cpu_bf16: bool = False,
    progress: bool = False,
) -> SegmentStats:
    """Run the predictor over every tissue tile of a planned slide and write the stitched map band by band.

    Args:
        plan: from :func:`plan_slide_map`.
        sink: receives bands ``sink.bands_done, ..., sink.n_bands - 1`` in order; its ``band_height`` must be a
            multiple of nothing in particular (any height works).
        predictor: batch of tiles -> :class:`TileOutput`; ``n_channels`` tells the score channels (default 4),
            ``presence_threshold`` the blended class probability above which a class may win (default 0.25).
        device: where the predictor runs; tiles are moved there, stitching stays on the CPU.
        batch_size: tiles per predictor call.
        workers: reader threads (0: read in this thread, between batches).
        amp: bf16 autocast on CUDA (and on CPU with ``cpu_bf16``).
        cpu_bf16: bf16 autocast on CPU too (see :func:`~histo_daen.devices.autocast_settings`).
        progress: show a tqdm bar in tiles, with tiles/s.

    Returns:
        :class:`SegmentStats`.
    """
    started = time.perf_counter()
    n_channels = int(getattr(predictor, "n_channels", 4))
    presence_threshold = float(getattr(predictor, "presence_threshold", DEFAULT_PRESENCE_THRESHOLD))
    tile_map = plan.tile_map_size
    if sink.n_bands != math.ceil(plan.shape_hw[0] / sink.band_height):
        raise ValueError(f"the sink has {sink.n_bands} bands of {sink.band_height} rows for a map of {plan.shape_hw}")
    first_band = sink.bands_done
    cleaner = None
    if plan.min_region_pixels > 1:
        halo = min(plan.min_region_pixels - 1, sink.band_height)
        cleaner = BandCleaner(
            min_pixels=plan.min_region_pixels, halo=halo, band_height=sink.band_height, map_height=plan.shape_hw[0]
        )
    # The clean-up of a resumed run's first band needs the rows above it: that band is stitched again, not written.
    first_stitched = first_band - 1 if cleaner is not None and 0 < first_band < sink.n_bands else first_band
    window = blend_window(
        (tile_map, tile_map),
        (plan.overlap - 2 * plan.context) // plan.map_stride,
        profile=plan.ramp,
        context=plan.context // plan.map_stride,
    )
    stitchers: list[BandStitcher] = []  # made at the first tile output, which tells the channels to blend

    def stitcher(n_values: int) -> BandStitcher:
        if not stitchers:
            stitchers.append(
                BandStitcher(
                    shape_hw=plan.shape_hw,
                    n_channels=n_values,
                    band_height=sink.band_height,
                    tile_shape_hw=(tile_map, tile_map),
                    window=window,
                    first_band=first_stitched,
                )
            )
        return stitchers[0]

    origin = first_stitched * sink.band_height
    first_needed = next((i for i, t in enumerate(plan.tiles) if t.y0 + tile_map > origin), len(plan.tiles))
    start = (first_needed // batch_size) * batch_size  # fixed batch boundaries: the same batches as a full run
    batches = [list(range(i, min(i + batch_size, len(plan.tiles)))) for i in range(start, len(plan.tiles), batch_size)]
    autocast = autocast_settings(device, amp=amp, cpu_bf16=cpu_bf16)
    n_run, n_written = 0, 0
    model_seconds = [0.0]
    scale: list[np.ndarray] = []  # each class's score unit, when the predictor asks for slide calibration

    def predict(images: np.ndarray) -> np.ndarray:
        """(B, C', h, w) float32 map-resolution outputs of a batch of tiles (B may be 0)."""
        if not len(images):
            return np.zeros((0, 0, tile_map, tile_map), dtype=np.float32)
        tensor = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        model_started = time.perf_counter()
        with torch.autocast(autocast.device_type, dtype=autocast.dtype, enabled=autocast.enabled):
            output = predictor(tensor)
        on_map = _to_map_resolution(output, plan.map_stride, n_channels).cpu().numpy()  # syncs the device
        model_seconds[0] += time.perf_counter() - model_started
        return on_map

    def labels_of(band: FinishedBand) -> tuple[np.ndarray, np.ndarray]:
        """(scores (K, h, W), labels (h, W)) of a stitched band: the best allowed class on tissue."""
        y0 = band.index * sink.band_height
        y1 = y0 + band.values.shape[1]
        scores = band.values[:n_channels]
        glass = band.values[n_channels] > GLASS_FRACTION
        is_tissue = band.covered & ~glass & plan.tissue_rows(y0, y1)
        presence = band.values[n_channels + 1 :]
        allowed = presence > presence_threshold if presence.shape[0] else None
        decided = scores / scale[0][:, None, None] if scale else scores
        return scores, map_values_from_scores(decided, is_tissue, allowed=allowed)

    def write(bands: Iterator[FinishedBand]) -> int:
        count = 0
        for band in bands:
            scores, labels = labels_of(band)
            if cleaner is None:
                sink.write_band(band.index, scores, labels)
                count += 1
                continue
            for clean in cleaner.push(band.index, scores, labels, context_only=band.index < first_band):
                sink.write_band(clean.index, clean.scores, clean.labels)
                count += 1
        return count

    def finished_before(y0: int) -> Iterator[FinishedBand]:
        return stitchers[0].finished_before(y0) if stitchers else iter(())

    reader = _TileReader(plan, workers)
    bar = progress_bar(
        total=len(plan.tiles), initial=start, unit="tile", enabled=progress, desc=plan.source.path.name, leave=False
    )
    try:
        # Calibration: the same evenly spaced tiles in every run (resumed or not), so the same scales; their outputs
        # are kept and stitched in their turn instead of being computed twice.
        sampled: dict[int, np.ndarray] = {}
        if getattr(predictor, "calibrate_classes", False):
            picks = np.linspace(0, len(plan.tiles) - 1, min(CALIBRATION_TILES, len(plan.tiles)))
            indices = sorted({int(i) for i in picks.round()})
            for i in range(0, len(indices), batch_size):
                chunk = indices[i : i + batch_size]
                sampled.update(zip(chunk, predict(reader.read([plan.tiles[k] for k in chunk])), strict=True))
            found = _class_scale(plan, [(plan.tiles[k], sampled[k]) for k in indices], n_channels)
            if found is not None:
                scale.append(found)
        to_read = [[plan.tiles[k] for k in batch if k not in sampled] for batch in batches]
        for batch, images in zip(batches, reader.batches(to_read), strict=True):
            n_written += write(finished_before(plan.tiles[batch[0]].y0))
            computed = iter(predict(images))
            for k in batch:
                planned = plan.tiles[k]
                values = sampled.pop(k) if k in sampled else next(computed)
                blend = stitcher(values.shape[0])
                n_written += write(blend.finished_before(planned.y0))
                blend.add(values, planned.y0, planned.x0)
            n_run += len(batch)
            bar.update(len(batch))
        n_written += write(stitcher(n_channels + 1).finish())
        if cleaner is not None:
            for clean in cleaner.finish():
                sink.write_band(clean.index, clean.scores, clean.labels)
                n_written += 1
    finally:
        bar.close()
        reader.close()
    seconds = time.perf_counter() - started
    logger.info(
        "%s: %d tiles (%d run) in %.1f s, %.1f tiles/s, model %.1f s",
        plan.source.path.name,
        len(plan.tiles),
        n_run,
        seconds,
        n_run / max(seconds, 1e-9),
        model_seconds[0],
    )
    return SegmentStats(len(plan.tiles), n_run, n_written, seconds, model_seconds[0])
