"""``histo-daen evaluate``: score a checkpoint's tissue maps against the masks of a labelled split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from histo_daen.cli import options

from histo_daen.config.schema import EvaluateConfig

__all__ = ["evaluate_command"]


@options.config_command(EvaluateConfig)
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
@options.setting("--split", key="split", type=click.Choice(["val", "test"]), help="Which labelled split to score.")
@options.output("Evaluation folder: metrics.json, config.yaml, confusion_matrix.png, examples/ (and masks/); created.")
@options.setting(
    "--label-source",
    key="inference.label_source",
    type=click.Choice(["predicted", "dataset", "masks"]),
    help="Which classes may appear in a patch: predicted by the classifier (threshold 0.25; the fair choice on "
    "unlabelled test patches), the labels in the file names, or the classes in each mask (optimistic).",
)
@options.setting(
    "--dataset",
    key="dataset",
    type=click.Choice(["luad", "bcss"]),
    default_text="the dataset the checkpoint was trained on, else luad",
    help="Dataset layout and classes.",
)
@options.setting("--batch-size", key="batch_size", type=click.IntRange(min=1), help="Patches per forward pass.")
@options.setting(
    "--save-masks", key="save_masks", is_flag=True, help="Also write each predicted mask as a palette PNG."
)
@options.device()
@options.config()
@options.overwrite("Replace an existing evaluation folder at --output (swapped in whole once the new one is written).")
@options.overrides()
def evaluate_command(
    checkpoint: Path,
    data_root: Path,
    output: Path,
    device: str,
    config_path: Path | None,
    overwrite: bool,
    overrides: tuple[str, ...],
    **settings: Any,
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
    from histo_daen.jobs.evaluate import run_evaluation

    cfg = options.load_command_config(EvaluateConfig, config_path, overrides)
    result = run_evaluation(
        checkpoint, data_root, output, cfg, device=device, overwrite=overwrite, progress=options.show_progress()
    )
    record = result.record
    click.echo(
        f"{record['method']} on {record['dataset']['split']} ({result.n_images} patches, "
        f"{record['protocol']['label_source']} labels, {record['protocol']['cams_used']} CAMs):"
    )
    click.echo(result.table())
    click.echo(f"Evaluation written to {result.output_dir}")
