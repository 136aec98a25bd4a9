"""``segment_slides``: a cohort of slides -> tissue maps, QuPath GeoJSON, pictures and one area table.

Output layout (``OUT`` is the output folder)::

    OUT/config.yaml                the resolved segment config
    OUT/summary.csv                one row per slide folder under OUT (every shard's slides), areas per class
    OUT/<slide stem>/map.zarr      OME-Zarr tissue map (built as map.zarr.partial/, renamed when complete)
    OUT/<slide stem>/map.geojson   QuPath objects, level-0 pixel coordinates (.geojson.gz with geojson_gzip)
    OUT/<slide stem>/overview.png  the map over the slide thumbnail, with per-class areas
    OUT/<slide stem>/summary.json  slide identity, model, map geometry, per-class areas; written last
    OUT/<slide stem>/failed.json   instead of summary.json when the slide failed: the error message

(Slides whose stems collide, ``a.svs`` and ``a.tiff``, get ``a_svs/`` and ``a_tiff/``.)

Every slide is independent: a slide that fails (corrupt, no resolution, no tissue) is recorded and the others go on.
A rerun skips slides whose ``summary.json`` exists, finishes maps left in ``map.zarr.partial`` at the first band not
yet written, and refuses (naming what changed) to reuse a map made with another model, slide or settings unless
``overwrite``. ``shard`` splits the sorted slides over machines or torchrun processes, with no coordinator: each
process writes only its own slides' folders, and ``summary.csv`` is rebuilt from every ``summary.json`` present.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from histo_daen import __version__
from histo_daen.atomic import atomic_write_text, partial_dir_for
from histo_daen.classes import ClassSet, class_set_for
from histo_daen.cohort import Shard, shard_items
from histo_daen.config import diff_configs, dump_config, to_plain_dict
from histo_daen.config.schema import SegmentConfig
from histo_daen.digest import file_sha256
from histo_daen.errors import ConfigError, HistoDaenError, OutputExistsError
from histo_daen.export.geojson import GeoJsonOptions, qupath_origin, write_geojson
from histo_daen.export.overlay import write_overview
from histo_daen.export.zarr_map import TissueMap, class_areas, open_map_writer, read_tissue_map
from histo_daen.inference.slide import CamPredictor, SegmentStats, plan_slide_map, segment_slide
from histo_daen.models.checkpoint import LoadedModel, load_model
from histo_daen.slide import Slide, open_slide
from histo_daen.slide.discovery import find_slides

__all__ = [
    "SegmentReport",
    "SlideOutcome",
    "output_folder_names",
    "segment_slides",
    "write_summary_csv",
]

logger = logging.getLogger(__name__)

# Settings that change the map; the rest (batch size, readers, GeoJSON and picture options) may change on resume.
_MAP_SETTINGS = (
    "overlap",
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
class SlideOutcome:
    """What happened to one slide.

    Attributes:
        slide: the input path.
        folder: its output folder, ``OUT/<stem>``.
        status: "done" (segmented now), "skipped" (done by an earlier run) or "failed".
        error: the one-line message when failed.
        summary: the content of ``summary.json`` when done or skipped.
        stats: tiles, bands and timings of this run's inference (None when nothing ran).
    """

    slide: Path
    folder: Path
    status: Literal["done", "skipped", "failed"]
    error: str | None = None
    summary: dict[str, Any] | None = None
    stats: SegmentStats | None = None


@dataclass(frozen=True)
class SegmentReport:
    """The outcome of :func:`segment_slides` for the slides of this shard."""

    outcomes: list[SlideOutcome] = field(default_factory=list)
    summary_csv: Path | None = None

    @property
    def failed(self) -> list[SlideOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status == "failed"]


def output_folder_names(paths: Sequence[Path]) -> dict[Path, str]:
    """Each slide's output folder name: its stem, or ``<stem>_<suffix>`` where stems collide (a.svs, a.tiff).

    Raises:
        ConfigError: two inputs would still share a folder (same file name in two folders).
    """
    by_stem: dict[str, list[Path]] = {}
    for path in paths:
        by_stem.setdefault(path.stem, []).append(path)
    names: dict[Path, str] = {}
    for stem, group in by_stem.items():
        for path in group:
            names[path] = stem if len(group) == 1 else f"{stem}_{path.suffix.lstrip('.').lower()}"
    seen: dict[str, Path] = {}
    for path, name in names.items():
        if name in seen:
            raise ConfigError(
                f"{seen[name]} and {path} would share the output folder '{name}'; "
                "rename one or segment them into separate output folders"
            )
        seen[name] = path
    return names


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


def _slide_identity(identity: dict[str, Any]) -> dict[str, Any]:
    # The absolute path stays out of what must match on resume: a moved slide is the same slide.
    return {key: value for key, value in identity.items() if key != "path"}


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


def _check_map_provenance(tissue_map: TissueMap, requested: dict[str, Any]) -> None:
    differing = diff_configs(tissue_map.provenance, requested)
    if differing:
        changes = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in sorted(differing.items())[:4])
        raise OutputExistsError(
            tissue_map.path,
            f"was made with another model, slide or settings ({changes})",
            "Pass --overwrite to replace it, or write to another output folder.",
        )


def _summary(
    slide_path: Path, identity: dict[str, Any], tissue_map: TissueMap, outputs: dict[str, str], n_tiles: int
) -> dict[str, Any]:
    areas = class_areas(tissue_map)
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
    slide_path: Path,
    folder: Path,
    *,
    loaded: LoadedModel,
    predictor: CamPredictor,
    model_provenance: dict[str, Any],
    classes: ClassSet,
    config: SegmentConfig,
    device: torch.device,
    overwrite: bool,
    progress: bool,
) -> SlideOutcome:
    map_path = folder / "map.zarr"
    summary_path = folder / "summary.json"
    if overwrite and folder.exists():
        shutil.rmtree(folder)
    (folder / "failed.json").unlink(missing_ok=True)
    stats: SegmentStats | None = None
    with open_slide(slide_path, backend=config.backend, mpp_override=config.slide_mpp) as slide:
        identity = slide.identity()
        requested = {
            "slide": {**_slide_identity(identity), "bounds_level0": _slide_bounds(slide)},
            "model": model_provenance,
            "segment": _map_settings(config),
            "label_source": config.inference.label_source,
            "histo_daen_version": __version__,
        }
        if map_path.exists():
            tissue_map = read_tissue_map(map_path)
            _check_map_provenance(tissue_map, requested)
            if summary_path.exists():
                return SlideOutcome(slide_path, folder, "skipped", summary=json.loads(summary_path.read_text()))
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
            options = GeoJsonOptions(
                object_type=config.geojson_object_type,
                simplify_map_pixels=config.geojson_simplify,
                min_area_um2=config.geojson_min_area_um2,
                origin_xy_level0=qupath_origin(tissue_map) if config.geojson_bounds_offset else (0.0, 0.0),
            )
            outputs["geojson"] = write_geojson(tissue_map, folder / name, options=options).name
        if config.overview:
            thumbnail = slide.thumbnail(config.overview_max_side)
            outputs["overview"] = write_overview(
                thumbnail, tissue_map, folder / "overview.png", slide_size_wh=slide.dimensions, title=slide_path.name
            ).name
    summary = _summary(slide_path, identity, tissue_map, outputs, len(plan.tiles))
    atomic_write_text(summary_path, json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return SlideOutcome(slide_path, folder, "done", summary=summary, stats=stats)


def _record_failure(slide_path: Path, folder: Path, message: str) -> None:
    record = {"slide": {"path": str(slide_path), "name": slide_path.name}, "status": "failed", "error": message}
    atomic_write_text(folder / "failed.json", json.dumps(record, indent=2) + "\n")


def write_summary_csv(output_dir: str | os.PathLike[str], classes: ClassSet) -> Path:
    """Rebuild ``OUT/summary.csv`` from every ``OUT/*/summary.json`` and ``failed.json``: one row per slide.

    Columns: slide, status, error, mpp0, map_mpp, n_tiles, tissue_mm2, then ``<class>_mm2`` and ``<class>_percent``
    for each class. Areas are in mm², percentages of the slide's tissue.
    """
    root = Path(output_dir)
    area_columns = [f"{code}_{unit}" for code in classes.codes for unit in ("mm2", "percent")]
    columns = ["slide", "status", "error", "mpp0", "map_mpp", "n_tiles", "tissue_mm2", *area_columns]
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


def segment_slides(
    slides: Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str],
    config: SegmentConfig | None = None,
    device: torch.device | str = "cpu",
    shard: Shard | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> SegmentReport:
    """Segment slides into tissue maps with a trained checkpoint (layout in the module docstring).

    Args:
        slides: slide files, folders or glob patterns (expanded by :func:`histo_daen.slide.discovery.find_slides`).
        output_dir: the output folder, created if missing.
        checkpoint: a histo-daen checkpoint (``last.pt`` of a training run, or an imported one).
        config: the segment settings (default: ``SegmentConfig()``).
        device: where the model runs (resolve "auto" first with ``histo_daen.devices.resolve_device``).
        shard: process only this shard of the sorted slides (``--shard K/N`` or torchrun's rank).
        overwrite: replace each slide's existing outputs instead of resuming or skipping them.
        progress: show progress bars (slides, and tiles with tiles/s).

    Returns:
        A :class:`SegmentReport`; failed slides are in ``report.failed`` with their messages.

    Raises:
        CheckpointError: the checkpoint cannot be loaded (before any slide is touched).
        ConfigError: no slides were given, or two slides would share an output folder.
    """
    config = SegmentConfig() if config is None else config
    if not slides:
        raise ConfigError("no slides given: pass slide files, folders or glob patterns")
    found = find_slides(slides)
    folders = output_folder_names(found.slides)  # over every shard's slides, so shards agree on the names
    paths = shard_items(found.slides, shard)
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    checkpoint_path = Path(checkpoint)
    loaded = load_model(checkpoint_path, device=device)
    # Known sets (luad, bcss) keep their colours; classes of an imported checkpoint get generated ones.
    classes = class_set_for(loaded.model_config.class_set, loaded.classes)
    predictor = CamPredictor(loaded.model, len(classes), config.inference)
    model_provenance = _model_provenance(checkpoint_path, loaded)
    dump_config(config, root / "config.yaml")
    # Inputs that name no slide (a typo, an empty folder) are reported once, by the first shard.
    outcomes = [
        SlideOutcome(problem.path, root, "failed", error=str(problem))
        for problem in (found.problems if shard is None or shard.index == 0 else ())
    ]
    for slide_path in tqdm(paths, unit="slide", disable=not progress or len(paths) < 2, desc="slides"):
        folder = root / folders[slide_path]
        try:
            outcome = _segment_one(
                slide_path,
                folder,
                loaded=loaded,
                predictor=predictor,
                model_provenance=model_provenance,
                classes=classes,
                config=config,
                device=device,
                overwrite=overwrite,
                progress=progress,
            )
        except HistoDaenError as err:
            message = str(err)
            if slide_path.name not in message:  # e.g. a config error: say which slide it stopped
                message = f"{slide_path}: {message}"
            logger.info("slide failed, going on with the others: %s", message)
            _record_failure(slide_path, folder, message)
            outcome = SlideOutcome(slide_path, folder, "failed", error=message)
        outcomes.append(outcome)
    summary_csv = write_summary_csv(root, classes)
    return SegmentReport(outcomes=outcomes, summary_csv=summary_csv)
