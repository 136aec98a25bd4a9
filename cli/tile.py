"""``histo-daen tile``: cut the tissue of whole-slide images into tiles at a chosen resolution, with a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from histo_daen.cli import options

from histo_daen.config.schema import TileConfig

__all__ = ["tile_command"]


@options.config_command(TileConfig)
@click.command("tile")
@click.argument("inputs", nargs=-1, required=True, metavar="SLIDE... [KEY=VALUE]...")
@options.output("Output folder; each slide gets OUTPUT/<slide name>/ with tiles/, manifest.csv and pictures. Created.")
@options.setting(
    "--target-mpp",
    key="target_mpp",
    type=click.FloatRange(min=0, min_open=True),
    help="Microns per pixel of the tiles (1.0 is LUAD-HistoSeg's 10x; 0.5 is 20x).",
)
@options.setting("--tile-size", key="tile_size", type=click.IntRange(min=16), help="Tile side in pixels.")
@options.setting("--overlap", key="overlap", type=click.IntRange(min=0), help="Pixels shared by neighbouring tiles.")
@options.setting(
    "--min-tissue",
    key="min_tissue",
    type=click.FloatRange(0, 1),
    help="Fraction of a tile that must be tissue for it to be kept (0 keeps every tile).",
)
@options.setting("--format", "fmt", key="format", type=click.Choice(["png", "jpeg"]), help="Tile files.")
@options.setting("--jpeg-quality", key="jpeg_quality", type=click.IntRange(1, 100), help="Quality of JPEG tiles.")
@options.setting(
    "--pyramid/--level0",
    "use_pyramid",
    key="use_pyramid",
    help="Where tiles are read: the coarsest pyramid level fine enough (fast), or level 0 shrunk with area "
    "averaging (slower; skips the scanner's own downsampled, re-compressed levels).",
)
@options.backend()
@options.slide_mpp()
@options.workers("Worker processes reading each slide (0: in this process).")
@options.shard()
@options.config()
@options.overwrite()
def tile_command(
    inputs: tuple[str, ...],
    output: Path,
    workers: int | None,
    shard: str | None,
    config_path: Path | None,
    overwrite: bool,
    **settings: Any,
) -> None:
    """Find the tissue on each SLIDE and cut it into tiles at a target resolution.

    SLIDE can be slide files, folders (their slide files) or quoted glob patterns. Per slide, OUTPUT/<name>/ gets
    tiles/ (PNG or JPEG), manifest.csv (one row per tile: level-0 box x,y,width,height, tissue_fraction, path,
    SHA-256), manifest.json (slide identity, settings), thumbnail.png, tissue_mask.png and tiles.png to check the
    tissue mask at a glance. A killed or interrupted run resumes when rerun with the same options; different
    options stop with a message unless --overwrite. One bad slide is reported and the others still finish
    (exit code 3). KEY=VALUE arguments set any key of the tile config (configs/tile.yaml), e.g. tissue_mpp=4.

    \b
    Examples:
      histo-daen tile slide.svs -o tiles/
      histo-daen tile 'cohort/*.svs' -o tiles/ --target-mpp 0.5 --tile-size 256 --format jpeg
      histo-daen tile scans/ -o tiles/ --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT
      histo-daen tile scan.tiff --slide-mpp 0.25 -o tiles/      # a file without resolution metadata
      histo-daen tile slide.svs -o tiles/ --level0 --backend tiffslide   # full-resolution reads, faster reader
      histo-daen synth-slide -o demo.svs && histo-daen tile demo.svs -o tiles/   # try it on a synthetic slide
    """
    from histo_daen.cli.cohort_report import echo_failure, echo_line, exit_for, shard_text
    from tqdm.contrib.logging import logging_redirect_tqdm

    from histo_daen.jobs.tile import tile_cohort

    slides, overrides = options.split_inputs(inputs)
    config = options.load_command_config(TileConfig, config_path, overrides)

    def report_outcome(outcome: Any) -> None:
        if outcome.status == "failed":
            echo_failure(outcome)
        else:
            echo_line(outcome.result.summary())

    with logging_redirect_tqdm():
        report = tile_cohort(
            slides,
            output,
            config,
            workers=workers,
            overwrite=overwrite,
            shard=shard,
            progress=options.show_progress(),
            on_outcome=report_outcome,
        )
    tiled = len(report.succeeded)
    if report.failed and len(report.outcomes) > 1:
        click.echo(f"{len(report.outcomes)} slides{shard_text(report)}: {tiled} tiled, {len(report.failed)} failed.")
    elif not report.outcomes:
        click.echo(f"No slides to tile{shard_text(report)}.")
    elif tiled > 1 and not report.failed:
        click.echo(f"{tiled} slides tiled into {output}")
    exit_for(report)
