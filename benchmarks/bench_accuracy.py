"""End-to-end accuracy check: train cam, seam, daen and histosegnet on one synthetic LUAD-HistoSeg set, compare.

Steps, all through the library (what a user runs, minus the command line):

1. write a synthetic dataset in the LUAD-HistoSeg layout (``histo_daen.data.synthetic_dataset``);
2. train every variant with the same seed, data, steps, batch and learning rate, on the CPU, with a light
   backbone (dilated ResNet-18 at reduced width, trained from random initialisation: no pretrained weights are
   available offline, and the reference recipe's frozen BatchNorm and stem are switched off for that reason);
3. evaluate each on the test split (``histo_daen.evaluation.evaluate``, the LUAD protocol, labels predicted by each
   classifier at 0.25), plus the same network untrained as a floor, and a constant majority-class prediction
   (chance);
4. print the comparison table (``histo_daen.evaluation.compare``) with the published LUAD-HistoSeg rows marked as
   not measured here, and the wall time of each stage.

Cost, measured on a shared two-core machine with the defaults and ``--jobs 4 --threads 1``: training took 86
CPU-seconds for cam, 84 for histosegnet, 155 for seam and 157 for daen (one thread each); the whole run took 1181 s
of wall time there, under a load average near 10 from other jobs (``--steps 300 --n-train 256 --n-test 48``: about
half the CPU time). Nothing is asserted; the printout is the result, and synthetic data says nothing about real
slides.

Measured with ``--seeds 0 1 2 --jobs 2 --threads 1`` (test mIoU %, mean +- standard deviation over the seeds;
chance 7.5, untrained 12.1): from scratch cam 58.0 +- 3.4, seam 41.7 +- 2.7, daen 17.5 +- 6.7, histosegnet
28.8 +- 5.2 (695 s); with ``--pretrain-steps 300`` cam 63.4 +- 3.8, seam 33.7 +- 4.6, daen 46.1 +- 6.2, histosegnet
62.9 +- 3.0. From random weights DAEN's CAMs collapse onto a few peaks (see ``cam_coverage`` in the training log).
Options:

    python benchmarks/bench_accuracy.py --seeds 0 1 2 --pretrain-steps 300   # all from a CAM-pretrained backbone

    python benchmarks/bench_accuracy.py                               # the default run
    python benchmarks/bench_accuracy.py --steps 300 --n-train 256     # quicker, noisier
    python benchmarks/bench_accuracy.py --variants seam daen --seeds 0 1 2 --output bench_out/
    python benchmarks/bench_accuracy.py --views mlps                  # single view, raw CAMs, global range
    python benchmarks/bench_accuracy.py --jobs 4 --threads 1          # the four runs side by side
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import multiprocessing
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from histo_daen.classes import LUAD
from histo_daen.config.load import load_config
from histo_daen.config.schema import DataConfig, EvaluateConfig, InferenceConfig, TrainConfig
from histo_daen.data.masks import read_mask
from histo_daen.data.registry import load_splits
from histo_daen.data.synthetic_dataset import write_synthetic_luad
from histo_daen.evaluation.compare import compare_evaluations
from histo_daen.evaluation.evaluate import evaluate
from histo_daen.evaluation.metrics import confusion_matrix, scores
from histo_daen.models import build_model, checkpoint_state, save_checkpoint
from histo_daen.seeding import seed_everything
from histo_daen.training.loop import train

VARIANTS = ("cam", "seam", "daen", "histosegnet")
VIEWS = {
    "seam": InferenceConfig(),  # the reference setting: PCM output, scales 0.5-2 with flips, per-class range
    "mlps": InferenceConfig(cam_source="raw", scales=(1.0,), flip=False, normalisation="global"),
}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="one training run per seed and variant")
    parser.add_argument("--n-train", type=int, default=384, help="training patches (label in the name)")
    parser.add_argument("--n-test", type=int, default=64, help="test patches (with masks)")
    parser.add_argument("--patch-size", type=int, default=96, help="patch side in pixels (LUAD: 224)")
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps per run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.02, help="base learning rate (new layers x10)")
    parser.add_argument("--width", type=float, default=0.25, help="channel multiplier of the ResNet-18")
    parser.add_argument("--views", choices=sorted(VIEWS), default="seam", help="CAM settings at evaluation")
    parser.add_argument("--output", type=Path, default=None, help="keep data, runs and evaluations here")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run [default: torch's]")
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=0,
        help="first train a plain CAM classifier this many steps (seed 0) and start every variant from its backbone, "
        "in place of the ImageNet weights the paper starts from (0: every variant from random weights)",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="training runs in parallel processes (each with --threads threads)"
    )
    return parser.parse_args()


def _train_config(
    args: argparse.Namespace, root: Path, variant: str, seed: int, pretrained: Path | None = None
) -> TrainConfig:
    return load_config(
        TrainConfig,
        overrides={
            "model": {
                "variant": variant,
                "backbone": "resnet18",
                "width": args.width,
                "input_size": args.patch_size,
                # From random initialisation: BatchNorm must learn its statistics and the stem must train.
                "freeze_batchnorm": False,
                "freeze_stem": False,
            },
            "data": {"root": root, "workers": 0},
            "optim": {
                "batch_size": args.batch_size,
                "lr": args.lr,
                "momentum": 0.9,  # the reference's 5e-4 "momentum" is plain SGD; from scratch that is too slow
                "epochs": 1000,
                "max_steps": args.steps,
            },
            "seed": seed,
            "pretrained": str(pretrained) if pretrained is not None else None,
            "log_every": 50,
            "checkpoint_every": 10_000,
        },
    )


@dataclass(frozen=True)
class Outcome:
    name: str
    variant: str
    train_wall_s: float
    train_cpu_s: float  # this process's CPU time: on a shared machine it varies far less than wall time
    miou: float
    eval_dir: Path


def _run_one(
    args: argparse.Namespace,
    data_root: Path,
    work: Path,
    eval_cfg: EvaluateConfig,
    seed: int,
    variant: str,
    pretrained: Path | None = None,
) -> Outcome:
    """Train one variant with one seed, evaluate it on the test split; prints one line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    name = variant if len(args.seeds) == 1 else f"{variant}-seed{seed}"
    wall, cpu = time.perf_counter(), time.process_time()
    cfg = _train_config(args, data_root, variant, seed, pretrained)
    result = train(cfg, output_dir=work / "runs" / name, device="cpu", overwrite=True)
    train_wall, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall = time.perf_counter()
    evaluation = evaluate(result.checkpoint, data_root, work / "eval" / name, eval_cfg, overwrite=True)
    assert evaluation.output_dir is not None
    print(
        f"{name:<14} train {train_wall:6.0f} s wall, {train_cpu:6.0f} s CPU ({result.objective} objective, "
        f"final loss {result.losses.get('loss', float('nan')):.3f}); evaluate {time.perf_counter() - wall:4.0f} s; "
        f"mIoU {100 * evaluation.scores.miou:5.1f}",
        flush=True,
    )
    return Outcome(name, variant, train_wall, train_cpu, evaluation.scores.miou, evaluation.output_dir)


def _majority_class_scores(root: Path) -> float:
    """mIoU of predicting the most frequent tissue class of the test split everywhere: the chance floor."""
    records = load_splits(DataConfig(root=root, validate=False), ("test",))["test"]
    masks = [read_mask(r.mask) for r in records if r.mask is not None]
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=5)[: len(LUAD)]
    majority = int(counts.argmax())
    matrix = sum(confusion_matrix(m, np.full_like(m, majority)) for m in masks)
    return scores(np.asarray(matrix)).miou


def main() -> None:
    args = _arguments()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.output or Path(tempfile.mkdtemp(prefix="bench_accuracy_"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data_root = work / "data"
    if not data_root.exists():
        write_synthetic_luad(data_root, n_train=args.n_train, n_val=8, n_test=args.n_test, patch_size=args.patch_size)
    timings: dict[str, list[float]] = {}  # training CPU seconds per variant
    eval_cfg = EvaluateConfig(batch_size=16, n_examples=4, inference=VIEWS[args.views])
    eval_dirs: list[Path] = []
    mious: dict[str, list[float]] = {}

    # The floor: the first variant's network, untrained, with the first seed.
    seed_everything(args.seeds[0])
    untrained_cfg = _train_config(args, data_root, args.variants[0], args.seeds[0])
    untrained = save_checkpoint(
        work / "untrained" / "last.pt", checkpoint_state(build_model(untrained_cfg.model), config=untrained_cfg)
    )
    untrained_eval = evaluate(
        untrained, data_root, work / "eval" / f"untrained-{args.variants[0]}", eval_cfg, overwrite=True
    )
    eval_dirs.append(untrained_eval.output_dir)

    pretrained = None
    if args.pretrain_steps > 0:
        pretrain_args = argparse.Namespace(**{**vars(args), "steps": args.pretrain_steps})
        pretrain_cfg = _train_config(pretrain_args, data_root, "cam", 0)
        pretrained = train(pretrain_cfg, output_dir=work / "runs" / "pretrain", device="cpu", overwrite=True).checkpoint
        print(f"pretrained a plain CAM classifier for {args.pretrain_steps} steps: {pretrained}", flush=True)

    runs = [(seed, variant) for seed in args.seeds for variant in args.variants]
    if args.jobs > 1:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            futures = [
                pool.submit(_run_one, args, data_root, work, eval_cfg, seed, variant, pretrained)
                for seed, variant in runs
            ]
            outcomes = [future.result() for future in futures]
    else:
        outcomes = [_run_one(args, data_root, work, eval_cfg, seed, variant, pretrained) for seed, variant in runs]
    for outcome in outcomes:
        timings.setdefault(outcome.variant, []).append(outcome.train_cpu_s)
        mious.setdefault(outcome.variant, []).append(outcome.miou)
        eval_dirs.append(outcome.eval_dir)

    comparison = compare_evaluations(eval_dirs, work / "compare", overwrite=True)
    start = f"from a CAM classifier pretrained {args.pretrain_steps} steps" if pretrained else "from scratch"
    print()
    print(
        f"Synthetic LUAD-HistoSeg: {args.n_train} training patches, {args.n_test} test patches of "
        f"{args.patch_size} px; ResNet-18 x{args.width} {start}, {args.steps} steps of {args.batch_size}, "
        f"lr {args.lr}, seeds {args.seeds}; CAM views: {args.views}; torch threads {torch.get_num_threads()}."
    )
    print(f"Chance (majority class everywhere): mIoU {100 * _majority_class_scores(data_root):.1f}")
    print(f"Untrained {args.variants[0]}: mIoU {100 * untrained_eval.scores.miou:.1f}")
    if len(args.seeds) > 1:
        for variant, values in mious.items():
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            mean = 100 * statistics.mean(values)
            print(f"{variant:<12} mIoU mean {mean:.1f} +- {100 * spread:.1f} over {len(values)} seeds")
    baseline = statistics.median(timings[args.variants[0]])
    ratios = ", ".join(f"{v} {statistics.median(t) / baseline:.2f}x" for v, t in timings.items())
    print(f"Training CPU time relative to {args.variants[0]} (same run): {ratios}")
    print()
    print(comparison.markdown.read_text())
    print(f"Total {time.perf_counter() - started:.0f} s; outputs in {work}")


if __name__ == "__main__":
    main()
