"""Each option shared by several commands, defined once: same name, help, unit and default everywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = [
    "backend",
    "config",
    "device",
    "overrides",
    "overwrite",
    "seed",
    "shard",
    "slide_mpp",
    "workers",
]

F = TypeVar("F", bound=Callable[..., Any])


def config() -> Callable[[F], F]:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        metavar="FILE|NAME",
        help="YAML file with settings, or the name of a shipped config (e.g. luad_daen, demo, segment; the files of "
        "configs/). Command-line options and KEY=VALUE overrides win over it.",
    )


def overrides() -> Callable[[F], F]:
    return click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")


def overwrite() -> Callable[[F], F]:
    return click.option(
        "--overwrite", is_flag=True, help="Replace existing outputs. Without it, a rerun with equal settings resumes."
    )


def backend() -> Callable[[F], F]:
    return click.option(
        "--backend",
        type=click.Choice(["auto", "openslide", "tiffslide"]),
        default=None,
        help="Slide reader. auto: OpenSlide, or tiffslide for files OpenSlide cannot open. [default: auto]",
    )


def slide_mpp() -> Callable[[F], F]:
    return click.option(
        "--slide-mpp",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Microns per pixel of the slides' level 0, for files whose metadata has none or an implausible value "
        "(e.g. 0.25 for a 40x scan, 0.5 for 20x).",
    )


def device() -> Callable[[F], F]:
    return click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto (a CUDA GPU if present, else CPU), cpu, cuda or cuda:N.",
    )


def seed() -> Callable[[F], F]:
    return click.option("--seed", type=int, default=None, help="Random seed. [default: from the config, 0]")


def workers() -> Callable[[F], F]:
    return click.option(
        "--workers",
        type=click.IntRange(min=0),
        default=None,
        help="Worker processes for reading slides (0: in this process). [default: all cores]",
    )


def shard() -> Callable[[F], F]:
    return click.option(
        "--shard",
        default=None,
        metavar="K/N",
        help="Process only shard K of N (0-based) of the sorted inputs, to split a cohort over machines, e.g. "
        "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT. Under torchrun, RANK/WORLD_SIZE are used by default.",
    )
