"""``histo-daen synth-slide``: write a synthetic H&E whole-slide image (and its ground truth) to try the tools on."""

from __future__ import annotations

from pathlib import Path

import click
from histo_daen.cli import options

__all__ = ["synth_slide_command"]


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"{text!r}: expected WIDTHxHEIGHT in pixels, e.g. 4096x3072")
    return int(parts[0]), int(parts[1])


@click.command("synth-slide")
@options.output(
    "Slide file to write: .svs (Aperio style) or .tif/.tiff (generic TIFF). Its ground truth goes beside it.",
    file_output=True,
)
@click.option("--size", "size_text", default="4096x3072", show_default=True, help="Level-0 WIDTHxHEIGHT in pixels.")
@click.option(
    "--mpp",
    type=click.FloatRange(min=0, min_open=True),
    default=0.5,
    show_default=True,
    help="Level-0 microns per pixel (0.25: a 40x scan, 0.5: 20x).",
)
@click.option("--levels", type=click.IntRange(min=1), default=4, show_default=True, help="Pyramid levels.")
@click.option(
    "--compression",
    type=click.Choice(["jpeg", "zlib", "none"]),
    default="jpeg",
    show_default=True,
    help="Tile compression (zlib: lossless Deflate).",
)
@click.option(
    "--tissue",
    type=click.Choice(["sections", "disc", "full", "none"]),
    default="sections",
    show_default=True,
    help="Tissue layout: 2-3 sections, one centred disc, all but a margin (resection-like), or blank glass.",
)
@options.seed("Same seed, same pixels.", key=None)
@click.option("--no-mpp", is_flag=True, help="Write no resolution metadata (to try --slide-mpp).")
@click.option("--pen-marks", is_flag=True, help="Draw blue, green and black marker ink on the glass.")
@click.option("--dust", is_flag=True, help="Scatter grey dust specks.")
@options.overwrite("Replace an existing slide file at --output.")
def synth_slide_command(
    output: Path,
    size_text: str,
    mpp: float,
    levels: int,
    compression: str,
    tissue: str,
    seed: int,
    no_mpp: bool,
    pen_marks: bool,
    dust: bool,
    overwrite: bool,
) -> None:
    """Write a synthetic H&E slide: tissue sections of tumour epithelium, necrosis, lymphocytes and stroma.

    A real pyramidal tiled TIFF that OpenSlide and tiffslide open, with the ground-truth class mask beside it
    (<name>.mask.png: 0 glass, 1 TE, 2 NEC, 3 LYM, 4 TAS, at 1/16 of level 0; <name>.mask.json describes it).
    Nothing is downloaded.

    \b
    Examples:
      histo-daen synth-slide -o demo.svs
      histo-daen synth-slide -o big.svs --size 20000x15000 --mpp 0.25 --levels 5
      histo-daen synth-slide -o no_mpp.tiff --no-mpp --pen-marks --dust
    """
    from histo_daen.data.synthetic_slide import SlideKind, write_synthetic_slide

    kind: SlideKind = "svs" if output.suffix.lower() == ".svs" else "tiff"
    if output.suffix.lower() not in (".svs", ".tif", ".tiff"):
        raise click.BadParameter(f"{output.name}: use a .svs, .tif or .tiff name", param_hint="--output")
    size_wh = _size(size_text)
    if min(size_wh) >> (levels - 1) < 1:
        raise click.BadParameter(f"{levels} levels do not fit {size_text}", param_hint="--levels")
    written = write_synthetic_slide(
        output,
        size_wh=size_wh,
        mpp=mpp,
        levels=levels,
        kind=kind,
        compression=None if compression == "none" else compression,  # type: ignore[arg-type]
        tissue=tissue,  # type: ignore[arg-type]
        seed=seed,
        write_mpp=not no_mpp,
        pen_marks=pen_marks,
        dust=dust,
        overwrite=overwrite,
    )
    width, height = written.size_wh
    click.echo(
        f"{written.path}: {width}x{height} px at {written.mpp:g} um/px, {written.levels} levels; "
        f"ground truth {written.mask_path.name}"
    )
