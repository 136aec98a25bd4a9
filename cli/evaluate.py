"""``histo-daen evaluate``: score a checkpoint's tissue maps against the masks of a labelled split."""

from __future__ import annotations

from pathlib import Path

import click
from histo_daen.cli import options

__all__ = ["evaluate_command"]


@click.command("evaluate")
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A histo-daen checkpoint, e.g. runs/daen/last.pt.",
)
@click.option(
    "--data-root",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset folder in the LUAD-HistoSeg layout (val/ and test/ with img/ and mask/).",
)
@click.option(
    "--split", type=click.Choice(["val", "test"]), default=None, help="Which labelled split to score. [default: test]"
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Evaluation folder: metrics.json, config.yaml, confusion_matrix.png, examples/ (and masks/); created.",
)
@click.option(
    "--label-source",
    type=click.Choice(["predicted", "dataset", "masks"]),
    default=None,
    help="Which classes may appear in a patch: predicted by the classifier (threshold 0.25; the fair choice on "
    "unlabelled test patches), the labels in the file names, or the classes in each mask (optimistic). "
    "[default: predicted]",
)
@click.option(
    "--dataset",
    type=click.Choice(["luad", "bcss"]),
    default=None,
    help="Dataset layout and classes. [default: the dataset the checkpoint was trained on, else luad]",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Patches per forward pass. [default: 8]")
@click.option("--save-masks", is_flag=True, default=None, help="Also write each predicted mask as a palette PNG.")
@options.device()
@options.config()
@options.overwrite()
@options.overrides()
def evaluate_command(
    checkpoint: Path,
    data_root: Path,
    split: str | None,
    output: Path,
    label_source: str | None,
    dataset: str | None,
    batch_size: int | None,
    save_masks: bool | None,
    device: str,
    config_path: Path | None,
    overwrite: bool,
    overrides: tuple[str, ...],
) -> None:
    """Score a checkpoint's tissue maps on a labelled split: per-class IoU, mIoU, FwIoU, pixel accuracy.

    Scoring follows the LUAD-HistoSeg protocol: one confusion matrix over the whole split, white-glass (exclude)
    pixels of the masks ignored, mIoU = mean over the four tissue classes. CAM settings are the 'inference'
    section of the config (SEAM's scales 0.5-2 with flips by default); change them with KEY=VALUE overrides.

    \b
    Examples:
      histo-daen evaluate --checkpoint runs/daen/last.pt --data-root LUAD-HistoSeg/ --split test -o eval/daen
      histo-daen evaluate --checkpoint runs/daen/last.pt --data-root LUAD-HistoSeg/ -o eval/daen-mlps \\
          --config configs/evaluate_mlps.yaml --save-masks
      histo-daen evaluate ... -o eval/daen-1x inference.scales=[1.0] inference.flip=false
    """
    from histo_daen.config import load_config
    from histo_daen.config.load import parse_overrides
    from histo_daen.config.schema import EvaluateConfig
    from histo_daen.jobs.evaluate import run_evaluation

    options_given = {
        "split": split,
        "dataset": dataset,
        "batch_size": batch_size,
        "save_masks": save_masks,
        "inference": {"label_source": label_source},
    }
    base = load_config(EvaluateConfig, config_path, overrides=parse_overrides(overrides))
    cfg = load_config(EvaluateConfig, base=base, overrides=options_given)
    result = run_evaluation(checkpoint, data_root, output, cfg, device=device, overwrite=overwrite, progress=True)
    record = result.record
    click.echo(
        f"{record['method']} on {record['dataset']['split']} ({result.n_images} patches, "
        f"{record['protocol']['label_source']} labels, {record['protocol']['cams_used']} CAMs):"
    )
    click.echo(result.table())
    click.echo(f"Evaluation written to {result.output_dir}")
