"""``histo-daen compare``: one table and chart of several evaluations, beside the published LUAD numbers."""

from __future__ import annotations

from pathlib import Path

import click
from histo_daen.cli import options

__all__ = ["compare_command"]


@click.command("compare")
@click.argument("eval_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@options.output("Folder for comparison.md, comparison.csv and iou_by_class.png; created.")
@click.option(
    "--published/--no-published",
    default=True,
    show_default=True,
    help="Add the published LUAD-HistoSeg numbers (DAEN Table 6, MLPS logs), marked as not measured here.",
)
@click.option(
    "--allow-mixed",
    is_flag=True,
    help="Put evaluations of different datasets or splits side by side (refused by default: they do not rank).",
)
@options.overwrite("Replace an existing comparison folder at --output (swapped in whole once the new one is written).")
def compare_command(
    eval_dirs: tuple[Path, ...], output: Path, published: bool, allow_mixed: bool, overwrite: bool
) -> None:
    """Put the per-class IoU and mIoU of several evaluations side by side.

    EVAL_DIRS are folders written by 'histo-daen evaluate'; each row is named after its folder and shows the
    dataset and split it scored. Evaluations of different datasets or splits are refused unless --allow-mixed.

    \b
    Example:
      histo-daen evaluate --checkpoint runs/daen/last.pt --data-root LUAD-HistoSeg/ -o eval/daen
      histo-daen evaluate --checkpoint runs/seam/last.pt --data-root LUAD-HistoSeg/ -o eval/seam
      histo-daen compare eval/daen eval/seam -o compare/
    """
    from histo_daen.evaluation.compare import compare_evaluations

    result = compare_evaluations(
        eval_dirs, output, include_published=published, overwrite=overwrite, allow_mixed=allow_mixed
    )
    measured = [row for row in result.rows if row.source == "measured"]
    width = max(len(row.name) for row in measured)
    scored_width = max(len(f"{row.dataset} {row.split}") for row in measured)
    for row in measured:
        miou = "-" if row.miou is None else f"{100 * row.miou:.2f}"
        click.echo(f"{row.name:<{width}}  {f'{row.dataset} {row.split}':<{scored_width}}  mIoU {miou}")
    click.echo(f"Comparison written: {result.markdown}, {result.csv.name}, {result.chart.name}")
