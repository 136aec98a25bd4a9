"""``histo-daen synth-dataset``: write a synthetic dataset in the exact LUAD-HistoSeg layout."""

from __future__ import annotations

from pathlib import Path

import click
from histo_daen.cli import options

__all__ = ["synth_dataset_command"]


@click.command("synth-dataset")
@options.output("Dataset folder to create (train/, val/, test/).")
@click.option("--n-train", type=click.IntRange(min=0), default=200, show_default=True, help="Training patches.")
@click.option("--n-val", type=click.IntRange(min=0), default=40, show_default=True, help="Validation patches.")
@click.option("--n-test", type=click.IntRange(min=0), default=40, show_default=True, help="Test patches.")
@click.option("--patch-size", type=click.IntRange(min=32), default=224, show_default=True, help="Patch side, pixels.")
@click.option(
    "--mpp", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True, help="Microns per pixel."
)
@options.seed("Same seed and options: identical files.", key=None)
@options.overwrite("Replace an existing dataset folder at --output. Without it, an interrupted run resumes.")
def synth_dataset_command(
    output: Path, n_train: int, n_val: int, n_test: int, patch_size: int, mpp: float, seed: int, overwrite: bool
) -> None:
    """Draw H&E-like TE/NEC/LYM/TAS patches with white glass in the LUAD-HistoSeg layout.

    Training patches carry their label in the name (<patient>-<x>-<y>-[TE NEC LYM TAS].png); val and test patches
    have palette masks (4 = white). The same renderer draws the demo's synthetic slides. An interrupted run
    resumes where it stopped.

    \b
    Example:
      histo-daen synth-dataset -o LUAD-synth/ --n-train 400 --seed 1
      histo-daen train --config demo --data-root LUAD-synth/ -o runs/demo
    """
    from histo_daen.data.synthetic_dataset import write_synthetic_luad

    result = write_synthetic_luad(
        output,
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        seed=seed,
        patch_size=patch_size,
        mpp=mpp,
        overwrite=overwrite,
        progress=options.show_progress(),
    )
    click.echo(f"{result.n_train} train, {result.n_val} val, {result.n_test} test patches: {result.root}")
