"""``histo-daen tile``: cut the tissue of whole-slide images into tiles at a chosen resolution, with a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from histo_daen.cli import options

__all__ = ["tile_command"]


@click.command("tile")
@click.argument("slides", nargs=-1, required=True, metavar="SLIDE...")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder; each slide gets OUTPUT/<slide name>/ with tiles/, manifest.csv and pictures. Created.",
)
@click.option(
    "--target-mpp",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Microns per pixel of the tiles (1.0 is LUAD-HistoSeg's 10x; 0.5 is 20x). [default: 1.0]",
)
@click.option("--tile-size", type=click.IntRange(min=16), default=None, help="Tile side in pixels. [default: 224]")
@click.option(
    "--overlap", type=click.IntRange(min=0), default=None, help="Pixels shared by neighbouring tiles. [default: 0]"
)
@click.option(
    "--min-tissue",
    type=click.FloatRange(0, 1),
    default=None,
    help="Fraction of a tile that must be tissue for it to be kept (0 keeps every tile). [default: 0.5]",
)
@click.option("--format", "fmt", type=click.Choice(["png", "jpeg"]), default=None, help="Tile files. [default: png]")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=None, help="Quality of JPEG tiles. [default: 90]")
@click.option(
    "--pyramid/--level0",
    "use_pyramid",
    default=None,
    help="Where tiles are read: the coarsest pyramid level fine enough (fast), or level 0 shrunk with area "
    "averaging (slower; skips the scanner's own downsampled, re-compressed levels). [default: --pyramid]",
)
@options.backend()
@options.slide_mpp()
@options.workers()
@options.shard()
@options.config()
@options.overwrite()
def tile_command(
    slides: tuple[str, ...],
    output: Path,
    target_mpp: float | None,
    tile_size: int | None,
    overlap: int | None,
    min_tissue: float | None,
    fmt: str | None,
    jpeg_quality: int | None,
    use_pyramid: bool | None,
    backend: str | None,
    slide_mpp: float | None,
    workers: int | None,
    shard: str | None,
    config_path: Path | None,
    overwrite: bool,
) -> None:
    """Find the tissue on each SLIDE and cut it into tiles at a target resolution.

    SLIDE can be slide files, folders (their slide files) or quoted glob patterns. Per slide, OUTPUT/<name>/ gets
    tiles/ (PNG or JPEG), manifest.csv (one row per tile: level-0 box x,y,width,height, tissue_fraction, path,
    SHA-256), manifest.json (slide identity, settings), thumbnail.png, tissue_mask.png and tiles.png to check the
    tissue mask at a glance. A killed or interrupted run resumes when rerun with the same options; different
    options stop with a message unless --overwrite. One bad slide is reported and the others still finish
    (exit code 3).

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

    from histo_daen.config import load_config
    from histo_daen.config.schema import TileConfig
    from histo_daen.jobs.tile import tile_cohort

    config = load_config(
        TileConfig,
        config_path,
        overrides={
            "target_mpp": target_mpp,
            "tile_size": tile_size,
            "overlap": overlap,
            "min_tissue": min_tissue,
            "format": fmt,
            "jpeg_quality": jpeg_quality,
            "use_pyramid": use_pyramid,
            "backend": backend,
            "slide_mpp": slide_mpp,
        },
    )

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
            progress=True,
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
