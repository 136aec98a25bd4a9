"""``histo-daen demo``: run the built-in demo (synthetic slide -> tiles -> ...), nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import click
from histo_daen.cli import options

__all__ = ["demo_command"]


@click.command("demo")
@options.output("Folder for everything the demo writes.", default=Path("demo_output"))
@options.workers("Worker processes reading the slide and writing the dataset (0: in this process).")
@options.config()
@options.overrides()
def demo_command(output: Path, workers: int | None, config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Run the demo on built-in synthetic data: each step prints where its outputs are.

    Rerunning reuses what earlier runs finished (the maps, seconds of work, are made again). KEY=VALUE arguments
    change the sizes of the slide, the dataset and the training (every key: DemoConfig in
    histo_daen/config/schema.py).

    \b
    Examples:
      histo-daen demo -o demo_output
      histo-daen demo -o toy slide_size=[1536,1024] n_train=16 n_val=2 n_test=4 \\
          'train_overrides=[optim.max_steps=2, optim.batch_size=4]'
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from histo_daen.config import load_config
    from histo_daen.config.schema import DemoConfig
    from histo_daen.jobs.demo import run_demo

    config = load_config(DemoConfig, config_path, overrides=list(overrides))
    with logging_redirect_tqdm():
        run_demo(output, workers=workers, config=config, echo=click.echo, progress=options.show_progress())
