"""``histo-daen demo``: run the built-in demo (synthetic slide -> tiles -> ...), nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import click
from histo_daen.cli import options

__all__ = ["demo_command"]


@click.command("demo")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo_output"),
    show_default=True,
    help="Folder for everything the demo writes.",
)
@options.workers()
def demo_command(output: Path, workers: int | None) -> None:
    """Run the demo on built-in synthetic data: each step prints where its outputs are.

    Rerunning reuses what earlier runs finished.

    \b
    Example:
      histo-daen demo -o demo_output
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from histo_daen.demo import run_demo

    with logging_redirect_tqdm():
        run_demo(output, workers=workers, echo=click.echo)
