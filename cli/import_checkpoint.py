"""``histo-daen import-checkpoint``: a SEAM or MLPS stage-1 checkpoint -> a histo-daen checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from histo_daen.cli import options

from histo_daen.config.schema import ImportConfig

__all__ = ["import_checkpoint_command"]


@options.config_command(ImportConfig)
@click.command("import-checkpoint")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@options.output("The histo-daen checkpoint to write (.pt); its folder is created.", file_output=True)
@options.setting(
    "--classes",
    key="classes",
    metavar="NAMES",
    help="Required. The classes of the checkpoint's fc8 in channel order, background excluded: a class set "
    "(luad = TE,NEC,LYM,TAS; bcss = TUM,STR,LYM,NEC) or comma-separated names.",
)
@options.setting(
    "--variant",
    key="variant",
    type=click.Choice(["auto", "seam", "cam"]),
    help="seam keeps SEAM's PCM (refined CAMs); cam is the plain CAM classifier. auto: seam for SEAM files, cam "
    "for MLPS files.",
)
@options.setting(
    "--input-normalisation",
    key="input_normalisation",
    type=click.Choice(["auto", "imagenet", "none"]),
    help="What the model does to its [0, 1] input. auto: as the source trained (SEAM ImageNet mean/std, MLPS none).",
)
@options.config()
@options.overwrite("Replace an existing checkpoint file at --output.")
@options.overrides()
def import_checkpoint_command(
    source: Path,
    output: Path,
    config_path: Path | None,
    overwrite: bool,
    overrides: tuple[str, ...],
    **settings: Any,
) -> None:
    """Import SOURCE, a checkpoint of the SEAM or MLPS (WSSS-Tissue stage 1) code, as a histo-daen checkpoint.

    The backbone, class count and background channel are read from the file; the output records the classes and
    where the weights came from, and works wherever a --checkpoint is taken (evaluate, segment).

    \b
    Examples:
      histo-daen import-checkpoint stage1_checkpoint_trained_on_luad.pth -o mlps_luad.pt --classes luad
      histo-daen import-checkpoint seam_luad.pth -o seam_luad.pt --classes luad
      histo-daen import-checkpoint resnet38_SEAM.pth -o seam_voc.pt --classes "$(cat voc_classes.txt)"
          (voc_classes.txt: aeroplane,bicycle,...,tvmonitor: the 20 VOC classes, fc8's background excluded)
    """
    from histo_daen.models.weights import import_reference_checkpoint  # lazy: keeps `histo-daen --help` instant

    cfg = options.load_command_config(ImportConfig, config_path, overrides)
    result = import_reference_checkpoint(
        source,
        output,
        classes=cfg.classes,
        variant=cfg.variant,
        input_normalisation=cfg.input_normalisation,
        overwrite=overwrite,
    )
    model = result.model_config
    layout = f"background + {model.num_classes}" if model.background_channel else f"{model.num_classes}"
    click.echo(
        f"Imported {result.report.description}: variant {model.variant}, {layout} classes "
        f"({', '.join(result.classes)}), input normalisation {model.input_normalisation}"
    )
    if result.report.ignored:
        click.echo(f"Not carried over: {', '.join(result.report.ignored_layers)}")
    click.echo(f"Checkpoint written: {result.output}")
