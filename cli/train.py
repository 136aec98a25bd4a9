"""``histo-daen train``: train DAEN (or SEAM, CM, SM, CAM) on patch-level labels; resumable; torchrun-ready."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import click
from histo_daen.cli import options

from histo_daen.config.schema import BackboneName, TrainConfig, Variant

__all__ = ["train_command"]


def _backbone(value: str | None) -> str | None:
    """A built-in backbone name or ``timm:<name>`` (the library checks that timm has the model)."""
    if value is None or value in get_args(BackboneName) or (value.startswith("timm:") and len(value) > len("timm:")):
        return value
    raise click.BadParameter(f"{value!r} is none of {', '.join(get_args(BackboneName))}, nor timm:<name>")


@options.config_command(TrainConfig)
@click.command("train")
@options.output("Run folder for last.pt, config.yaml and metrics.jsonl; created.")
@options.setting(
    "--dataset",
    key="data.dataset",
    help="Dataset kind: luad (LUAD-HistoSeg), bcss (BCSS-WSSS), tiles (histo-daen tile output + data.labels_csv=FILE).",
)
@options.setting(
    "--data-root",
    key="data.root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Dataset folder (holding train/, val/, test/).",
)
@options.setting("--variant", key="model.variant", type=click.Choice(get_args(Variant)), help="Network.")
@options.setting(
    "--backbone",
    key="model.backbone",
    callback=lambda _ctx, _param, value: _backbone(value),
    help=f"{', '.join(get_args(BackboneName))}, or timm:<name> for a timm model (e.g. timm:vit_large_patch16_224 for "
    "UNI; timm.list_models() names them).",
)
@options.setting(
    "--pretrained",
    key="pretrained",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default_text="random weights, with a warning",
    help="Local weights for the backbone: .params or .pth (ImageNet weights or a histo-daen checkpoint); for timm "
    "backbones a timm state dict (.safetensors, .bin, .pth). Nothing is downloaded.",
)
@options.setting(
    "--recipe",
    key="recipe",
    type=click.Choice(["auto", "reference", "scratch"]),
    help="Settings that follow the start: reference (the paper's ImageNet fine-tuning: frozen BatchNorm and stem, "
    "momentum 5e-4, DAEN's attention as coded) or scratch (BatchNorm and stem train, momentum 0.9, residual "
    "attention that cannot collapse); auto: reference with --pretrained weights, scratch without. Keys set "
    "explicitly keep their value.",
)
@options.setting("--epochs", key="optim.epochs", type=click.IntRange(min=1), help="Passes over the training set.")
@options.setting(
    "--batch-size", key="optim.batch_size", type=click.IntRange(min=1), help="Patches per step over all processes."
)
@options.setting("--lr", key="optim.lr", type=click.FloatRange(min=0, min_open=True), help="Base learning rate.")
@options.setting(
    "--max-steps",
    key="optim.max_steps",
    type=click.IntRange(min=1),
    default_text="every step of the epochs",
    help="Stop after this many steps (a short try).",
)
@options.workers("Data-loader processes per training process.", key="data.workers")
@options.device()
@options.seed()
@options.config()
@click.option("--resume", is_flag=True, help="Continue the run in the output folder from its last.pt.")
@options.overwrite(
    "Start the run again: the run in --output (last.pt, config.yaml, metrics.jsonl) is deleted once the new one "
    "has loaded its data and model. To continue it instead, pass --resume."
)
@options.overrides()
def train_command(
    output: Path,
    device: str,
    config_path: Path | None,
    resume: bool,
    overwrite: bool,
    overrides: tuple[str, ...],
    **settings: Any,
) -> None:
    """Train a CAM network from the patch labels in the file names of a LUAD-HistoSeg-style folder.

    Settings come from the defaults, then --config, then these options and KEY=VALUE overrides such as
    twin.scale=0.3 (every key: configs/ and docs/internals.md; an option and a KEY=VALUE for the same key must
    agree). The defaults follow the start (--recipe): the paper's recipe for ImageNet weights, one that learns
    from random weights without them (config.yaml records what was used), so a plain
    'histo-daen train --data-root D -o R' trains DAEN from random weights with it.
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

    from histo_daen.jobs.train import run_training

    cfg = options.load_command_config(TrainConfig, config_path, overrides)
    with logging_redirect_tqdm():
        run = run_training(
            cfg, output, device=device, resume=resume, overwrite=overwrite, progress=options.show_progress()
        )
    if not run.reports:  # under torchrun, rank 0 prints the result
        return
    result = run.result
    loss = result.losses.get("loss")
    loss_text = f", loss {loss:.4f}" if loss is not None else ""
    click.echo(
        f"Trained {result.step}/{result.max_steps} steps ({result.objective} objective{loss_text}, "
        f"{result.images_per_second:.1f} images/s): {result.checkpoint}"
    )
