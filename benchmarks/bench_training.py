"""Training-step speed and memory per variant and backbone, DAEN against SEAM, and the data loader's share.

    python benchmarks/bench_training.py                      # resnet18 + resnet38 (width 0.5), all variants, CPU
    python benchmarks/bench_training.py --backbones resnet38 --width 1.0 --steps 2   # the paper's backbone
    python benchmarks/bench_training.py --device cuda         # on a GPU (bf16 autocast, as training runs there)

Each (variant, backbone) runs in a fresh process, so its peak memory is its own: one training step (both SEAM
branches, the loss, backward, SGD) on a batch of 8 patches of 224 px, timed after a warm-up step; the fastest of the
timed steps is reported, in wall time and in this process's CPU time (steadier on a shared machine). Memory is the
process's peak resident set (CPU) or peak allocated CUDA memory (GPU), minus what was in use before the first step.
The data-loader share comes from real ``train()`` runs on a synthetic LUAD-HistoSeg folder with the default loader
settings: seconds spent waiting for batches over seconds per step (goal: under 5 %). Ratios are within this run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = ("daen", "seam", "cm", "sm", "cam")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(variant: str, backbone: str, width: float, batch: int, size: int, steps: int, device_name: str) -> None:
    import torch

    from histo_daen.config.load import load_config
    from histo_daen.config.schema import TrainConfig
    from histo_daen.devices import autocast_settings, resolve_device
    from histo_daen.models.registry import build_model
    from histo_daen.training.affine import TwinTransform
    from histo_daen.training.loop import resolve_objective
    from histo_daen.training.objective import TwinNetwork, classification_objective, seam_objective
    from histo_daen.training.schedule import build_optimizer

    device = resolve_device(device_name)
    cfg = load_config(
        TrainConfig,
        overrides={"model": {"variant": variant, "backbone": backbone, "width": width, "input_size": size}},
    )
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device).train()
    objective = resolve_objective(cfg, model)
    twin = TwinTransform(cfg.twin) if objective == "seam" else None
    network = TwinNetwork(model, twin)
    optimizer = build_optimizer(model.parameter_groups(), cfg.optim)
    autocast = autocast_settings(device, amp=cfg.amp)
    images = torch.rand(batch, 3, size, size, device=device)
    labels = (torch.rand(batch, cfg.model.num_classes, device=device) > 0.5).float()
    labels[:, 0] = 1.0
    params = twin.draw(range(batch), seed=0, epoch=0) if twin else None

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(**autocast.kwargs):  # type: ignore[arg-type]
            first, second = network(images, params)
        if twin is not None and second is not None and params is not None:
            terms = seam_objective(first, second, labels, image_hw=(size, size), twin=twin, params=params, cfg=cfg.loss)
        else:
            terms = classification_objective(first, labels, cfg.loss)
        terms.total.backward()
        optimizer.step()

    before = _rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    step()  # warm-up (allocator, kernels)
    times, cpu_times = [], []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(
        json.dumps(
            {
                "variant": variant,
                "backbone": backbone,
                "objective": objective,
                # Fastest step: on a shared machine other processes only ever add time.
                "step_s": min(times),
                "images_per_s": batch / min(times),
                "cpu_s": min(cpu_times),
                "peak_mib": peak / 2**20,
                "step_mib": (peak - before) / 2**20,
                "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
                "threads": torch.get_num_threads(),
            }
        )
    )


def _run_child(args: argparse.Namespace, variant: str, backbone: str) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--child", variant, backbone, "--width", str(args.width), "--batch", str(args.batch),
        "--size", str(args.size), "--steps", str(args.steps), "--device", args.device,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{variant}/{backbone} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _loader_share(args: argparse.Namespace, variant: str, backbone: str, root: Path, work: Path) -> dict[str, float]:
    """data_time_share of a real train() run, windows after the first (the first holds worker start-up)."""
    from histo_daen.config.load import load_config
    from histo_daen.config.schema import TrainConfig
    from histo_daen.training.loop import train

    cfg = load_config(
        TrainConfig,
        overrides={
            "model": {"variant": variant, "backbone": backbone, "width": args.width},
            "data": {"root": root},
            "optim": {"batch_size": args.batch, "max_steps": 3 * args.loader_window},
            "log_every": args.loader_window,
            "checkpoint_every": 10_000,
        },
    )
    result = train(cfg, output_dir=work / f"{variant}-{backbone}", device=args.device, overwrite=True)
    lines = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    later = lines[1:]
    return {
        "share": statistics.mean(m["data_time_share"] for m in later),
        "images_per_s": statistics.mean(m["images_per_second"] for m in later),
        "workers": cfg.data.workers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "BACKBONE"), help=argparse.SUPPRESS)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--backbones", default="resnet18,resnet38")
    parser.add_argument("--width", type=float, default=0.5, help="backbone width multiplier (paper: 1.0)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="patch side in pixels (LUAD: 224)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument(
        "--loader-variants", default="cam,daen", help="variants whose data-loader share is measured (empty: none)"
    )
    parser.add_argument("--loader-window", type=int, default=4, help="steps per measured window (3 windows)")
    args = parser.parse_args()
    if args.child:
        _child(*args.child, args.width, args.batch, args.size, args.steps, args.device)
        return

    import torch

    from histo_daen.data.synthetic_dataset import write_synthetic_luad

    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {os.cpu_count()} cores, ", end="")
    print(f"CUDA {'available: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}")
    print(
        f"device {args.device}, batch {args.batch}, {args.size} px patches, width {args.width}, "
        f"fastest of {args.steps} steps"
    )
    print()
    rows = []
    for backbone in args.backbones.split(","):
        for variant in args.variants.split(","):
            rows.append(_run_child(args, variant, backbone))
    header = f"{'backbone':<9} {'variant':<8} {'objective':<15} {'params M':>8} {'s/step':>8} {'CPU s':>7} "
    print(header + f"{'img/s':>7} {'peak MiB':>9} {'step MiB':>9}")
    for r in rows:
        print(
            f"{r['backbone']:<9} {r['variant']:<8} {r['objective']:<15} {r['parameters_m']:>8.2f} {r['step_s']:>8.3f} "
            f"{r['cpu_s']:>7.3f} {r['images_per_s']:>7.2f} {r['peak_mib']:>9.0f} {r['step_mib']:>9.0f}"
        )
    print()
    by_key = {(r["backbone"], r["variant"]): r for r in rows}
    for backbone in args.backbones.split(","):
        daen, seam = by_key.get((backbone, "daen")), by_key.get((backbone, "seam"))
        if daen and seam:
            print(
                f"{backbone}: DAEN/SEAM  time per step x{daen['step_s'] / seam['step_s']:.3f}, "
                f"CPU time per step x{daen['cpu_s'] / seam['cpu_s']:.3f}, "
                f"images/s x{daen['images_per_s'] / seam['images_per_s']:.3f}, "
                f"step memory x{daen['step_mib'] / max(seam['step_mib'], 1e-9):.3f}"
            )
    print()
    backbone = args.backbones.split(",")[0]
    with tempfile.TemporaryDirectory() as scratch:
        root = write_synthetic_luad(
            Path(scratch) / "LUAD-synth", n_train=args.batch * 3 * args.loader_window, n_val=0, n_test=0,
            patch_size=args.size, seed=0,
        ).root  # fmt: skip
        for variant in filter(None, args.loader_variants.split(",")):
            share = _loader_share(args, variant, backbone, root, Path(scratch) / "runs")
            print(
                f"data loader ({backbone}/{variant}, {share['workers']} workers, HED + flips/turns): "
                f"{100 * share['share']:.2f} % of the step waiting for data "
                f"({share['images_per_s']:.2f} img/s in train()); goal < 5 %"
            )


if __name__ == "__main__":
    main()
