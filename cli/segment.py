"""``histo-daen segment``: whole slides -> OME-Zarr tissue maps, QuPath GeoJSON, overview pictures, an area table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from histo_daen.cli import options

from histo_daen.config.schema import SegmentConfig

__all__ = ["segment_command"]


@options.config_command(SegmentConfig)
@click.command("segment")
@click.argument("inputs", nargs=-1, required=True, metavar="SLIDE... [KEY=VALUE]...")
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A histo-daen checkpoint, e.g. runs/daen/last.pt; tiles are read at the resolution it was trained at.",
)
@options.output("Output folder: <slide>/{map.zarr, map.geojson, overview.png, summary.json}, summary.csv; created.")
@options.setting("--batch-size", key="batch_size", type=click.IntRange(min=1), help="Tiles per forward pass.")
@options.workers("Tile-reading threads, each with its own slide handle (0: read between batches).", key="workers")
@options.setting(
    "--object-type",
    key="geojson_object_type",
    type=click.Choice(["annotation", "detection"]),
    help="QuPath objects: one locked annotation per class, or one detection per region.",
)
@options.setting(
    "--ngff-version",
    key="ngff_version",
    type=click.Choice(["0.4", "0.5"]),
    help="OME-Zarr version: 0.4 (Zarr v2, read by QuPath 0.6+ and most viewers) or 0.5 (Zarr v3).",
)
@options.shard()
@options.slide_mpp()
@options.backend()
@options.device()
@options.config()
@options.overwrite()
def segment_command(
    inputs: tuple[str, ...],
    checkpoint: Path,
    output: Path,
    shard: str | None,
    device: str,
    config_path: Path | None,
    overwrite: bool,
    **settings: Any,
) -> None:
    """Segment whole slides into tissue maps (TE, NEC, LYM, TAS) with a trained checkpoint.

    SLIDE can be files, folders (their slide files) or quoted glob patterns. Tissue tiles are read at the
    checkpoint's resolution, their CAMs blended into a map band by band (memory does not grow with the slide), and
    per slide you get map.zarr (OME-Zarr: labels + class scores, micrometre scale), map.geojson (drag it onto the
    slide in QuPath), overview.png and summary.json; summary.csv lists every slide's class areas. A killed run
    resumes where it stopped when rerun with the same options. KEY=VALUE arguments override the config
    (configs/segment.yaml; the 'inference' section sets the CAM views).

    \b
    Examples:
      histo-daen segment slide.svs --checkpoint runs/daen/last.pt -o maps/
      histo-daen segment 'cohort/*.svs' --checkpoint runs/daen/last.pt -o maps/ --shard 0/4
      torchrun --nproc_per_node=4 --no-python histo-daen segment cohort/ --checkpoint last.pt -o maps/
      histo-daen segment slide.tiff --slide-mpp 0.25 --checkpoint last.pt -o maps/ inference.flip=true
    """
    from histo_daen.cli.cohort_report import echo_failure, echo_line, exit_for, shard_text
    from tqdm.contrib.logging import logging_redirect_tqdm

    from histo_daen.jobs.segment import segment_cohort

    slides, overrides = options.split_inputs(inputs)
    config = options.load_command_config(SegmentConfig, config_path, overrides)

    def report_outcome(outcome: Any) -> None:
        if outcome.status == "failed":
            echo_failure(outcome)
            return
        summary, stats = outcome.result.summary, outcome.result.stats
        areas = ", ".join(f"{a['class']} {a['percent_of_tissue']:.1f}%" for a in summary.get("areas", []))
        speed = f", {stats.n_tiles_run} tiles at {stats.tiles_per_second:.1f} tiles/s" if stats is not None else ""
        state = "done" if outcome.status == "done" else "already done"
        echo_line(f"{outcome.slide.name}: {state}{speed}; tissue {summary.get('tissue_mm2', 0):.2f} mm² ({areas})")
        echo_line(f"  -> {outcome.folder}")

    with logging_redirect_tqdm():
        report = segment_cohort(
            slides,
            output,
            checkpoint=checkpoint,
            config=config,
            device=device,
            shard=shard,
            overwrite=overwrite,
            progress=options.show_progress(),
            on_outcome=report_outcome,
        )
    n_failed = len(report.failed)
    click.echo(
        f"{len(report.outcomes)} slide(s){shard_text(report)}: {len(report.outcomes) - n_failed} ok, {n_failed} "
        f"failed. Areas of every slide: {report.table}"
    )
    exit_for(report)
