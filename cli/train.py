"""``histo-daen train``: train DAEN (or SEAM, CM, SM, CAM) on patch-level labels; resumable; torchrun-ready."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import click
from histo_daen.cli import options

from histo_daen.config.schema import BackboneName, Variant

__all__ = ["train_command"]


def _backbone(value: str | None) -> str | None:
    """A built-in backbone name or ``timm:<name>`` (the library checks that timm has the model)."""
    if value is None or value in get_args(BackboneName) or (value.startswith("timm:") and len(value) > len("timm:")):
        return value
    raise click.BadParameter(f"{value!r} is none of {', '.join(get_args(BackboneName))}, nor timm:<name>")


@click.command("train")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder for last.pt, config.yaml and metrics.jsonl; created.",
)
@click.option(
    "--dataset",
    default=None,
    help="Dataset kind: luad (LUAD-HistoSeg), bcss (BCSS-WSSS), tiles (histo-daen tile output + data.labels_csv=FILE). "
    "[default: luad]",
)
@click.option(
    "--data-root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Dataset folder (holding train/, val/, test/).",
)
@click.option("--variant", type=click.Choice(get_args(Variant)), default=None, help="Network. [default: daen]")
@click.option(
    "--backbone",
    callback=lambda _ctx, _param, value: _backbone(value),
    default=None,
    help=f"{', '.join(get_args(BackboneName))}, or timm:<name> for a timm model (e.g. timm:vit_large_patch16_224 for "
    "UNI; timm.list_models() names them). [default: resnet38]",
)
@click.option(
    "--pretrained",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Local weights for the backbone: .params or .pth; for timm backbones a timm state dict (.safetensors, "
    ".bin, .pth). Nothing is downloaded. Without it the backbone starts random.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="[default: 8]")
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=None, help="Patches per step over all processes. [default: 8]"
)
@click.option(
    "--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Base learning rate. [default: 0.01]"
)
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps (a short try).")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Data-loader processes per training process. [default: 2]",
)
@options.device()
@options.seed()
@options.config()
@click.option("--resume", is_flag=True, help="Continue the run in the output folder from its last.pt.")
@options.overwrite()
@options.overrides()
def train_command(
    output: Path,
    dataset: str | None,
    data_root: Path | None,
    variant: str | None,
    backbone: str | None,
    pretrained: Path | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    max_steps: int | None,
    workers: int | None,
    device: str,
    seed: int | None,
    config_path: Path | None,
    resume: bool,
    overwrite: bool,
    overrides: tuple[str, ...],
) -> None:
    """Train a CAM network from the patch labels in the file names of a LUAD-HistoSeg-style folder.

    Settings come from the defaults (the paper's recipe), then --config, then these options, then KEY=VALUE
    overrides such as optim.momentum=0.9 or twin.scale=0.3 (every key: configs/ and docs/internals.md).
    Runs on the CPU (in bf16 with cpu_bf16=true, faster on CPUs with AVX512-BF16 or AMX), one GPU (bf16), or
    several processes under torchrun; an interrupted run continues with --resume.

    \b
    Examples:
      histo-daen synth-dataset -o LUAD-synth/
      histo-daen train --config demo --data-root LUAD-synth/ -o runs/demo
      histo-daen train --dataset luad --data-root LUAD-HistoSeg/ --variant daen \\
          --pretrained ilsvrc-cls_rna-a1_cls1000_ep-0001.params -o runs/daen
      histo-daen train --config luad_daen --data-root LUAD-HistoSeg/ -o runs/daen --resume
      torchrun --nproc_per_node=4 "$(which histo-daen)" train --config luad_daen \\
          --data-root LUAD-HistoSeg/ --pretrained weights.params -o runs/daen
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from histo_daen.config import load_config
    from histo_daen.config.schema import TrainConfig
    from histo_daen.jobs.train import run_training

    cli_options = {
        "data": {"dataset": dataset, "root": data_root, "workers": workers},
        "model": {"variant": variant, "backbone": backbone},
        "optim": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "max_steps": max_steps},
        "pretrained": pretrained,
        "seed": seed,
    }
    cfg = load_config(TrainConfig, config_path, overrides=cli_options)
    if overrides:
        cfg = load_config(TrainConfig, base=cfg, overrides=list(overrides))
    with logging_redirect_tqdm():
        run = run_training(cfg, output, device=device, resume=resume, overwrite=overwrite, progress=True)
    if not run.reports:  # under torchrun, rank 0 prints the result
        return
    result = run.result
    loss = result.losses.get("loss")
    loss_text = f", loss {loss:.4f}" if loss is not None else ""
    click.echo(
        f"Trained {result.step}/{result.max_steps} steps ({result.objective} objective{loss_text}, "
        f"{result.images_per_second:.1f} images/s): {result.checkpoint}"
    )
