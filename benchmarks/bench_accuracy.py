"""The accuracy ablation: every method trained on one synthetic LUAD-HistoSeg set, over seeds and two starts.

Steps, all through the library (what a user runs, minus the command line):

1. write a synthetic dataset in the LUAD-HistoSeg layout (``histo_daen.data.synthetic_dataset``);
2. for each start and seed, train every row with the same data, steps, batch and learning rate on the CPU, with a
   light backbone (dilated ResNet-18 at reduced width; no ImageNet weights are available offline, so every run
   uses the ``scratch`` training recipe, ``histo_daen/training/recipe.py``):

   - ``scratch``: from random weights;
   - ``backbone``: from the backbone of a plain CAM classifier trained ``--pretrain-steps`` steps with the same
     seed (what a user without ImageNet weights can do by hand: train ``cam``, pass its ``last.pt`` as
     ``--pretrained``);

3. evaluate each run on the test split with the default protocol (``histo_daen.evaluation.evaluate``: classes
   predicted by the classifier on the x1 view above 0.25, CAMs over SEAM's 8 views, argmax over the four classes)
   and read the CAM coverage of its training log (share of the present classes' pixels whose normalised CAM
   exceeds 0.2; below about 0.05 the CAMs have collapsed onto a few peaks);
4. print mean +- standard deviation over the seeds per row and start, what each component changes (the row
   with it minus the row without it), and the training CPU time of each row relative to ``cam``.

Rows: ``cam`` (plain CAM classifier), ``seam`` (+ PCM and the equivariant losses), ``cm`` / ``sm`` (+ channel /
spatial attention), ``daen-faithful`` (the CSM as the DAEN code has it, ``model.attention_form=reference``),
``daen`` (the default: the scratch recipe's residual attention) and ``histosegnet`` (Grad-CAM baseline).
``cm`` and ``sm`` use the same attention form as ``daen``.

Nothing is asserted; the printout is the result, and synthetic data says nothing about real slides. The measured
table is in the README ("Accuracy on synthetic data").

    python benchmarks/bench_accuracy.py --seeds 0 1 2 --jobs 2 --threads 1      # the README's table (150 steps)
    python benchmarks/bench_accuracy.py --rows cam daen --seeds 0 1 2 --steps 300 --pretrain-steps 300
    python benchmarks/bench_accuracy.py --rows seam daen --starts scratch       # a part of it
    python benchmarks/bench_accuracy.py --views mlps                            # score with MLPS's single raw view
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import multiprocessing
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histo_daen.classes import LUAD
from histo_daen.config.load import load_config
from histo_daen.config.schema import DataConfig, EvaluateConfig, InferenceConfig, TrainConfig
from histo_daen.data.masks import read_mask
from histo_daen.data.registry import load_splits
from histo_daen.data.synthetic_dataset import write_synthetic_luad
from histo_daen.evaluation.evaluate import evaluate
from histo_daen.evaluation.metrics import confusion_matrix, scores
from histo_daen.training.loop import METRICS_NAME, train

# Row name -> (variant, config overrides on top of the shared settings).
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "cam": ("cam", {}),
    "seam": ("seam", {}),
    "cm": ("cm", {}),
    "sm": ("sm", {}),
    "daen-faithful": ("daen", {"model": {"attention_form": "reference"}}),
    "daen": ("daen", {}),
    "histosegnet": ("histosegnet", {}),
}
STARTS = ("scratch", "backbone")
VIEWS = {
    "default": InferenceConfig(),  # x1-view labels, SEAM's 8 CAM views, argmax over the four classes
    "mlps": InferenceConfig(cam_source="raw", scales=(1.0,), flip=False, normalisation="global"),
    "all-views-labels": InferenceConfig(label_views="all", white_exclude=True),  # the former default
}
# What each component adds: (component, row with it, row without it).
COMPONENTS = (
    ("PCM + equivariant losses (SEAM)", "seam", "cam"),
    ("channel attention (CM)", "cm", "seam"),
    ("spatial attention (SM)", "sm", "seam"),
    ("channel-spatial attention (DAEN)", "daen", "seam"),
    ("DAEN's attention as coded -> residual", "daen", "daen-faithful"),
)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--starts", nargs="+", default=list(STARTS), choices=STARTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="one training run per seed, row and start")
    parser.add_argument("--n-train", type=int, default=384, help="training patches (label in the name)")
    parser.add_argument("--n-test", type=int, default=64, help="test patches (with masks)")
    parser.add_argument("--patch-size", type=int, default=96, help="patch side in pixels (LUAD: 224)")
    # 150 steps: the 42 runs of the README's table fit in about half an hour on two shared cores; 300 trains every
    # row further (README, "Accuracy on synthetic data", has both where measured).
    parser.add_argument("--steps", type=int, default=150, help="optimiser steps per run")
    parser.add_argument("--pretrain-steps", type=int, default=150, help="steps of the CAM classifier (backbone)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.02, help="base learning rate (new layers x10)")
    parser.add_argument("--width", type=float, default=0.25, help="channel multiplier of the ResNet-18")
    parser.add_argument("--views", choices=sorted(VIEWS), default="default", help="evaluation protocol")
    parser.add_argument("--output", type=Path, default=None, help="keep data, runs and evaluations here")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="training runs in parallel processes")
    return parser.parse_args()


def _train_config(args: argparse.Namespace, root: Path, row: str, seed: int, pretrained: Path | None) -> TrainConfig:
    variant, extra = ROWS[row]
    shared: dict[str, Any] = {
        "model": {"variant": variant, "backbone": "resnet18", "width": args.width, "input_size": args.patch_size},
        "data": {"root": root, "workers": 0},
        "optim": {"batch_size": args.batch_size, "lr": args.lr, "epochs": 1000, "max_steps": args.steps},
        "seed": seed,
        "pretrained": str(pretrained) if pretrained is not None else None,
        "log_every": 25,
        "checkpoint_every": 100_000,
    }
    base = load_config(TrainConfig, overrides=shared)
    return load_config(TrainConfig, base=base, overrides=extra) if extra else base


@dataclass(frozen=True)
class Outcome:
    row: str
    start: str
    seed: int
    train_cpu_s: float  # this process's CPU time: on a shared machine it varies far less than wall time
    miou: float
    iou: tuple[float, ...]
    coverage_min: float | None  # lowest logged cam_coverage after the first tenth of training
    coverage_final: float | None
    eval_dir: Path


def _coverage(run_dir: Path, steps: int) -> tuple[float | None, float | None]:
    lines = [json.loads(line) for line in (run_dir / METRICS_NAME).read_text().splitlines() if line]
    values = [(r["step"], r["cam_coverage"]) for r in lines if "cam_coverage" in r]
    later = [v for step, v in values if step > steps // 10]
    return (min(later) if later else None), (values[-1][1] if values else None)


def _run_one(
    args: argparse.Namespace, root: Path, work: Path, row: str, start: str, seed: int, pretrained: Path | None
) -> Outcome:
    """Train one row with one seed from one start and evaluate it on the test split; prints one line."""
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.ERROR)
    name = f"{row}-{start}-seed{seed}"
    cpu = time.process_time()
    result = train(_train_config(args, root, row, seed, pretrained), output_dir=work / "runs" / name, overwrite=True)
    train_cpu = time.process_time() - cpu
    cfg = EvaluateConfig(batch_size=16, n_examples=2, inference=VIEWS[args.views])
    evaluation = evaluate(result.checkpoint, root, work / "eval" / name, cfg, device="cpu", overwrite=True)
    assert evaluation.output_dir is not None
    low, final = _coverage(result.output_dir, args.steps)
    coverage = "" if final is None else f", coverage min {low:.3f} final {final:.3f}"
    print(f"{name:<32} {train_cpu:5.0f} CPU-s, test mIoU {100 * evaluation.scores.miou:5.1f}{coverage}", flush=True)
    iou = tuple(float(v) for v in evaluation.scores.iou)
    return Outcome(row, start, seed, train_cpu, evaluation.scores.miou, iou, low, final, evaluation.output_dir)


def _pretrain(args: argparse.Namespace, root: Path, work: Path, seed: int) -> Path:
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.ERROR)
    cfg = _train_config(argparse.Namespace(**{**vars(args), "steps": args.pretrain_steps}), root, "cam", seed, None)
    return train(cfg, output_dir=work / "runs" / f"pretrain-seed{seed}", overwrite=True).checkpoint


def _majority_class_miou(root: Path) -> float:
    """mIoU of predicting the most frequent tissue class of the test split everywhere: the chance floor."""
    records = load_splits(DataConfig(root=root, validate=False), ("test",))["test"]
    masks = [read_mask(r.mask) for r in records if r.mask is not None]
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=5)[: len(LUAD)]
    matrix = sum(confusion_matrix(m, np.full_like(m, int(counts.argmax()))) for m in masks)
    return scores(np.asarray(matrix)).miou


def _mean_sd(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "-"
    mean = scale * statistics.mean(values)
    sd = scale * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _tables(args: argparse.Namespace, outcomes: list[Outcome]) -> str:
    by = {(o.row, o.start): [x for x in outcomes if (x.row, x.start) == (o.row, o.start)] for o in outcomes}
    cpu = {row: statistics.median(o.train_cpu_s for o in outcomes if o.row == row) for row in args.rows}
    base_cpu = cpu.get("cam") or next(iter(cpu.values()))
    header = ["Method"]
    for start in args.starts:
        label = "from scratch" if start == "scratch" else "from a CAM backbone"
        header += [f"mIoU % {label}", f"coverage min / final {label}"]
    header += ["train CPU vs cam"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for row in args.rows:
        cells = [row]
        for start in args.starts:
            runs = by.get((row, start), [])
            cells.append(_mean_sd([o.miou for o in runs]))
            low = [o.coverage_min for o in runs if o.coverage_min is not None]
            final = [o.coverage_final for o in runs if o.coverage_final is not None]
            cells.append(f"{_mean_sd(low, 1, 2)} / {_mean_sd(final, 1, 2)}" if low else "-")
        cells.append(f"{cpu[row] / base_cpu:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| Component (row minus row) | " + " | ".join(f"Δ mIoU {s}" for s in args.starts) + " |"]
    lines.append("|---|" + "---:|" * len(args.starts))
    for component, with_it, without in COMPONENTS:
        if with_it not in args.rows or without not in args.rows:
            continue
        cells = [f"{component}: {with_it} - {without}"]
        for start in args.starts:
            a = {o.seed: o.miou for o in by.get((with_it, start), [])}
            b = {o.seed: o.miou for o in by.get((without, start), [])}
            cells.append(_mean_sd([a[s] - b[s] for s in sorted(a.keys() & b.keys())]))  # paired by seed
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    args = _arguments()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)
    work = args.output or Path(tempfile.mkdtemp(prefix="bench_accuracy_"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    root = work / "data"
    if not root.exists():
        write_synthetic_luad(root, n_train=args.n_train, n_val=8, n_test=args.n_test, patch_size=args.patch_size)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        backbones: dict[int, Path] = {}
        if "backbone" in args.starts:
            pretrains = {seed: pool.submit(_pretrain, args, root, work, seed) for seed in args.seeds}
            backbones = {seed: future.result() for seed, future in pretrains.items()}
        futures = [
            pool.submit(
                _run_one, args, root, work, row, start, seed, backbones.get(seed) if start == "backbone" else None
            )
            for start in args.starts
            for seed in args.seeds
            for row in args.rows
        ]
        outcomes = [future.result() for future in futures]
    print()
    print(
        f"Synthetic LUAD-HistoSeg: {args.n_train} training patches, {args.n_test} test patches of {args.patch_size} "
        f"px; ResNet-18 x{args.width}, {args.steps} steps of {args.batch_size}, lr {args.lr}, scratch recipe; "
        f"CAM backbone: a cam run of {args.pretrain_steps} steps per seed; seeds {args.seeds}; evaluation: "
        f"{args.views}; {args.jobs} job(s) x {args.threads} thread(s)."
    )
    print(f"Chance (majority class everywhere): test mIoU {100 * _majority_class_miou(root):.1f} %")
    print()
    print(_tables(args, outcomes))
    print(f"\nTotal {time.perf_counter() - started:.0f} s wall; outputs in {work}")


if __name__ == "__main__":
    main()
