"""The ``segment`` job: a cohort of slides -> tissue maps, QuPath GeoJSON, pictures and one area table.

Output layout (``OUT`` is the output folder)::

    OUT/config.yaml                the resolved segment config
    OUT/summary.csv                one row per slide folder under OUT (every shard's slides), areas per class
    OUT/<slide stem>/map.zarr      OME-Zarr tissue map (built as map.zarr.partial/, renamed when complete)
    OUT/<slide stem>/map.geojson   QuPath objects, level-0 pixel coordinates (.geojson.gz with geojson_gzip)
    OUT/<slide stem>/overview.png  the map over the slide thumbnail, with per-class areas
    OUT/<slide stem>/summary.json  slide identity, model, map geometry, per-class areas, seam ratio; written last
    OUT/<slide stem>/failed.json   instead of summary.json when the slide failed: the error message

Slides, shards, folder names and failures follow the cohort rules of :mod:`histo_daen.jobs.cohort`; a slide that
fails (corrupt, no resolution, no tissue) gets ``failed.json`` and the others go on. A rerun skips slides whose
``summary.json`` exists, finishes maps left in ``map.zarr.partial`` at the first band not yet written, and refuses
(naming what changed, :func:`histo_daen.provenance.require_same`) to reuse a map made with another model, slide or
settings unless ``overwrite``; a folder whose ``config.yaml`` records other map settings is refused before any slide
(and keeps that record). ``summary.csv`` is rebuilt from every ``summary.json`` present, whichever shard
wrote it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from histo_daen import __version__
from histo_daen.atomic import atomic_write_text, partial_dir_for
from histo_daen.classes import ClassSet, class_set_for
from histo_daen.config import dump_config, load_config, to_plain_dict
from histo_daen.config.schema import SegmentConfig
from histo_daen.devices import process_device
from histo_daen.digest import file_sha256
from histo_daen.errors import HistoDaenError, OutputExistsError
from histo_daen.evaluation.seams import seam_ratio
from histo_daen.export.geojson import geojson_options, write_geojson
from histo_daen.export.overlay import write_overview
from histo_daen.export.zarr_map import TissueMap, class_areas, open_map_writer, read_tissue_map
from histo_daen.inference.slide import (
    CamPredictor,
    SegmentStats,
    SlideMapPlan,
    map_geometry,
    plan_slide_map,
    segment_slide,
)
from histo_daen.jobs.cohort import CohortReport, Shard, SlideOutcome, SlideTask, run_cohort
from histo_daen.models.checkpoint import LoadedModel, load_model
from histo_daen.provenance import require_same
from histo_daen.resources import require_workers
from histo_daen.slide import Slide, open_slide

__all__ = ["SegmentReport", "SlideSegmentation", "segment_cohort", "write_summary_csv"]

logger = logging.getLogger(__name__)

# Settings that change the map; the rest (batch size, readers, GeoJSON and picture options) may change on resume.
_MAP_SETTINGS = (
    "overlap",
    "context",
    "stitching",
    "min_region_um2",
    "min_tissue",
    "tissue_mpp",
    "map_stride",
    "chunk_size",
    "pyramid_levels",
    "ngff_version",
    "amp",
    "backend",
    "slide_mpp",
    "inference",
)


@dataclass(frozen=True)
class SlideSegmentation:
    """What segmenting one slide gave.

    Attributes:
        summary: the content of its ``summary.json`` (slide identity, map geometry, model, per-class areas).
        stats: tiles, bands and timings of this run's inference (None when the map was already finished).
    """

    summary: dict[str, Any]
    stats: SegmentStats | None = None


SegmentReport = CohortReport[SlideSegmentation]  # report.table is OUT/summary.csv


def _model_provenance(checkpoint: Path, loaded: LoadedModel) -> dict[str, Any]:
    return {
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": file_sha256(checkpoint),
        "model_config": to_plain_dict(loaded.model_config),
        "classes": list(loaded.classes),
        "epoch": int(loaded.state.get("epoch", 0)),
        "step": int(loaded.state.get("step", 0)),
    }


def _map_settings(config: SegmentConfig) -> dict[str, Any]:
    plain = to_plain_dict(config)
    return {key: plain[key] for key in _MAP_SETTINGS}


def _record_config(root: Path, config: SegmentConfig, *, overwrite: bool) -> None:
    """Write ``OUT/config.yaml``, first refusing a folder whose recorded map settings differ (unless ``overwrite``),
    so a refused run leaves the record of the maps that are there.

    Raises:
        OutputExistsError: ``config.yaml`` records other map settings, or cannot be read.
    """
    path = root / "config.yaml"
    hint = "Pass --overwrite to replace the maps, or write to another output folder."
    if path.exists() and not overwrite:
        try:
            stored = load_config(SegmentConfig, path)
        except HistoDaenError as err:
            raise OutputExistsError(path, f"cannot be read as a segment config ({err})", hint) from err
        require_same(
            {"segment": _map_settings(stored)},
            {"segment": _map_settings(config)},
            path=path,
            subject="records maps made with other settings",
            hint=hint,
        )
    dump_config(config, path)


def _slide_bounds(slide: Slide) -> list[int]:
    """The level-0 ``[x, y, width, height]`` of the slide's non-empty region (OpenSlide's ``bounds-*``, e.g. MRXS),
    else the whole of level 0."""
    width, height = slide.dimensions
    values = [str(slide.properties.get(f"{slide.backend}.bounds-{key}", "")) for key in ("x", "y", "width", "height")]
    try:
        x, y, bounds_width, bounds_height = (int(value) for value in values)
    except ValueError:  # absent ("") or not a number
        return [0, 0, width, height]
    if bounds_width <= 0 or bounds_height <= 0:
        return [0, 0, width, height]
    return [x, y, bounds_width, bounds_height]


def _summary(
    slide_path: Path,
    identity: dict[str, Any],
    tissue_map: TissueMap,
    outputs: dict[str, str],
    n_tiles: int,
    plan: SlideMapPlan,
) -> dict[str, Any]:
    areas = class_areas(tissue_map)
    # How much the label changes line up with the tile grid (histo_daen.evaluation.seams): 1.0 = seamless.
    seams = seam_ratio((band for _, band in tissue_map.label_bands()), plan.tile_step)
    return {
        "slide": {**identity, "path": str(slide_path.resolve())},
        "status": "done",
        "outputs": outputs,
        "map": {
            "shape_hw": list(tissue_map.shape_hw),
            "mpp0": tissue_map.mpp0,
            "map_downsample": tissue_map.map_downsample,
            "map_mpp": tissue_map.map_mpp,
            "n_levels": tissue_map.n_levels,
            "ngff_version": tissue_map.ngff_version,
            "tile_step": plan.tile_step,
            "overlap": plan.overlap,  # model pixels, as resolved (config null: from the tile and context)
            "context": plan.context,
            "seam_ratio": seams,
        },
        "model": {k: v for k, v in tissue_map.provenance["model"].items() if k != "model_config"},
        "label_source": tissue_map.provenance["label_source"],
        "n_tiles": n_tiles,
        "tissue_mm2": sum(area.area_mm2 for area in areas),
        "areas": [
            {
                "class": area.code,
                "name": area.name,
                "n_pixels": area.n_pixels,
                "area_mm2": area.area_mm2,
                "percent_of_tissue": area.percent_of_tissue,
            }
            for area in areas
        ],
        "histo_daen_version": __version__,
    }


def _segment_one(
    task: SlideTask,
    *,
    loaded: LoadedModel,
    predictor: CamPredictor,
    model_provenance: dict[str, Any],
    classes: ClassSet,
    config: SegmentConfig,
    geometry: dict[str, int],
    device: torch.device,
    overwrite: bool,
    progress: bool,
) -> tuple[Literal["done", "skipped"], SlideSegmentation]:
    slide_path, folder = task.slide, task.folder
    map_path = folder / "map.zarr"
    summary_path = folder / "summary.json"
    if overwrite and folder.exists():
        shutil.rmtree(folder)
    (folder / "failed.json").unlink(missing_ok=True)
    stats: SegmentStats | None = None
    with open_slide(slide_path, backend=config.backend, mpp_override=config.slide_mpp) as slide:
        identity = slide.identity()
        requested = {
            # Compared by content alone (provenance.slide_identity): a moved or renamed slide is the same slide.
            "slide": {**{k: v for k, v in identity.items() if k != "path"}, "bounds_level0": _slide_bounds(slide)},
            "model": model_provenance,
            "segment": _map_settings(config),
            # Resolved, not as configured: a map of an earlier version, whose defaults made another tile layout, is
            # not resumed or reused by a run whose same settings (``null``) mean another layout now.
            "geometry": geometry,
            "label_source": config.inference.label_source,
            "histo_daen_version": __version__,
        }
        if map_path.exists():
            tissue_map = read_tissue_map(map_path)
            require_same(
                tissue_map.provenance,
                requested,
                path=map_path,
                subject="was made with another model, slide or settings",
                hint="Pass --overwrite to replace it, or write to another output folder.",
            )
            if summary_path.exists():
                return "skipped", SlideSegmentation(json.loads(summary_path.read_text(encoding="utf-8")))
        plan = plan_slide_map(
            slide,
            model_mpp=loaded.model_config.input_mpp,
            tile_size=loaded.model_config.input_size,
            config=config,
        )
        if not map_path.exists():
            partial = partial_dir_for(map_path)
            writer = open_map_writer(
                partial,
                shape_hw=plan.shape_hw,
                classes=classes,
                mpp0=plan.mpp0,
                map_downsample=plan.map_downsample,
                chunk_size=config.chunk_size,
                ngff_version=config.ngff_version,
                provenance=requested,
            )
            stats = segment_slide(
                plan,
                writer,
                predictor,
                device=device,
                batch_size=config.batch_size,
                workers=config.workers,
                amp=config.amp,
                cpu_bf16=config.cpu_bf16,
                progress=progress,
            )
            writer.finalise(pyramid_levels=config.pyramid_levels)
            os.replace(partial, map_path)
            tissue_map = read_tissue_map(map_path)
        outputs = {"map": map_path.name}
        if config.geojson:
            name = "map.geojson.gz" if config.geojson_gzip else "map.geojson"
            options = geojson_options(config, tissue_map)
            outputs["geojson"] = write_geojson(tissue_map, folder / name, options=options).name
        if config.overview:
            thumbnail = slide.thumbnail(config.overview_max_side)
            outputs["overview"] = write_overview(
                thumbnail, tissue_map, folder / "overview.png", slide_size_wh=slide.dimensions, title=slide_path.name
            ).name
    summary = _summary(slide_path, identity, tissue_map, outputs, len(plan.tiles), plan)
    atomic_write_text(summary_path, json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return "done", SlideSegmentation(summary, stats)


def _record_failure(task: SlideTask, message: str) -> None:
    record = {"slide": {"path": str(task.slide), "name": task.slide.name}, "status": "failed", "error": message}
    atomic_write_text(task.folder / "failed.json", json.dumps(record, indent=2) + "\n")


def _format_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def write_summary_csv(output_dir: str | os.PathLike[str], classes: ClassSet) -> Path:
    """Rebuild ``OUT/summary.csv`` from every ``OUT/*/summary.json`` and ``failed.json``: one row per slide.

    Columns: slide, status, error, mpp0, map_mpp, n_tiles, seam_ratio, tissue_mm2, then ``<class>_mm2`` and
    ``<class>_percent`` for each class. Areas are in mm², percentages of the slide's tissue; the seam ratio is 1.0
    for a map whose label changes do not follow the tile grid (empty when undefined or not recorded).
    """
    root = Path(output_dir)
    area_columns = [f"{code}_{unit}" for code in classes.codes for unit in ("mm2", "percent")]
    columns = ["slide", "status", "error", "mpp0", "map_mpp", "n_tiles", "seam_ratio", "tissue_mm2", *area_columns]
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        summary_path, failed_path = folder / "summary.json", folder / "failed.json"
        if summary_path.exists():
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
            row: dict[str, Any] = {
                "slide": summary["slide"]["name"],
                "status": "done",
                "error": "",
                "mpp0": summary["map"]["mpp0"],
                "map_mpp": summary["map"]["map_mpp"],
                "n_tiles": summary["n_tiles"],
                "seam_ratio": _format_ratio(summary["map"].get("seam_ratio")),
                "tissue_mm2": f"{summary['tissue_mm2']:.4f}",
            }
            for area in summary["areas"]:
                row[f"{area['class']}_mm2"] = f"{area['area_mm2']:.4f}"
                row[f"{area['class']}_percent"] = f"{area['percent_of_tissue']:.2f}"
            rows.append(row)
        elif failed_path.exists():
            failed = json.loads(failed_path.read_text(encoding="utf-8"))
            rows.append({"slide": failed["slide"]["name"], "status": "failed", "error": failed["error"]})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(root / "summary.csv", text.getvalue())


def segment_cohort(
    slides: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str],
    config: SegmentConfig | None = None,
    device: torch.device | str = "auto",
    shard: Shard | str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    on_outcome: Callable[[SlideOutcome[SlideSegmentation]], None] | None = None,
) -> SegmentReport:
    """Segment slides into tissue maps with a trained checkpoint (layout in the module docstring).

    Args:
        slides: slide files, folders or glob patterns.
        output_dir: the output folder, created if missing.
        checkpoint: a histo-daen checkpoint (``last.pt`` of a training run, or an imported one).
        config: the segment settings (default: ``SegmentConfig()``).
        device: where the model runs: "auto", "cpu", "cuda", "cuda:N" or a device; under torchrun "auto" and
            "cuda" mean ``cuda:LOCAL_RANK`` (one GPU per process).
        shard: process only this shard of the sorted slides (``Shard`` or ``"K/N"``; default: torchrun's rank).
        overwrite: replace each slide's existing outputs instead of resuming or skipping them.
        progress: show progress bars (slides, and tiles with tiles/s).
        on_outcome: called with each slide's outcome as soon as it is known.

    Returns:
        The :class:`~histo_daen.jobs.cohort.CohortReport`: ``report.table`` is ``summary.csv``, the ``result`` of a
        done or skipped outcome a :class:`SlideSegmentation`; failed slides are in ``report.failed``.

    Raises:
        CheckpointError: the checkpoint cannot be loaded (before any slide is touched).
        ConfigError: no slides were given, or overlap, context and map stride do not fit the checkpoint's tiles
            (before any slide is touched). PathError: the output folder cannot be written.
    """
    config = SegmentConfig() if config is None else config
    require_workers(config.workers, setting="--workers (workers)", kind="threads")
    resolved = process_device(device)
    checkpoint_path = Path(checkpoint)
    loaded = load_model(checkpoint_path, device=resolved)
    # Settings that cannot fit this model's tiles are refused once, before any slide; model pixels.
    context, overlap = map_geometry(loaded.model_config.input_size, config)
    geometry = {"overlap": overlap, "context": context}
    # Known sets (luad, bcss) keep their colours; classes of an imported checkpoint get generated ones.
    classes = class_set_for(loaded.model_config.class_set, loaded.classes)
    predictor = CamPredictor(loaded.model, len(classes), config.inference, stitching=config.stitching)
    model_provenance = _model_provenance(checkpoint_path, loaded)

    def work(task: SlideTask) -> tuple[Literal["done", "skipped"], SlideSegmentation]:
        return _segment_one(
            task,
            loaded=loaded,
            predictor=predictor,
            model_provenance=model_provenance,
            classes=classes,
            config=config,
            geometry=geometry,
            device=resolved,
            overwrite=overwrite,
            progress=progress,
        )

    report = run_cohort(
        slides,
        output_dir,
        work,
        shard=shard,
        progress=progress,
        on_start=lambda root: _record_config(root, config, overwrite=overwrite),
        on_outcome=on_outcome,
        on_failure=_record_failure,
    )
    return dataclasses.replace(report, table=write_summary_csv(report.output, classes))
