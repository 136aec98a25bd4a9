"""Slide segmentation speed and memory: ``segment`` against the model alone on the same batches, in one run.

Two synthetic Aperio-style JPEG SVS slides at 0.5 um/px (20x): A (default 8192 x 6144 px) and B with four times the
area (twice each side), tissue sections of the four classes on glass. Written once into ``bench_output/`` and
reused. The model is an untrained DAEN of the demo's size (ResNet-18 at width 0.5, 224-px tiles at 1 um/px): its
weights do not change its speed. Each measurement runs in its own process, so its memory is its own:

- model only: the plan's tiles are read into memory first (not timed), then the model (``CamPredictor``: CAMs as
  evaluation computes them) runs on the same batches as ``segment``, including the move to the device: the floor.
- streaming inference: ``segment_slide`` (background reads, model, stitching, map bands written to Zarr).
- segment: ``segment_cohort``, what ``histo-daen segment`` runs: the above plus the map pyramid, GeoJSON, the
  overview picture and summary.json, from loading the checkpoint to the last file.
- baseline: imports, the checkpoint loaded and the slide planned, no inference: the fixed memory of a process.

Each timed measurement runs ``--repeat`` times (default 3) and the fastest counts. Peak memory is the process's
peak resident set (``ru_maxrss``). Nothing here asserts: it prints figures and ratios measured in this run.

Usage: ``python benchmarks/bench_segment.py [--size 8192x6144] [--batch-size 16] [--workers 2] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and the library load inside the measured processes only
    from histo_daen.config.schema import SegmentConfig
    from histo_daen.inference.slide import CamPredictor, SlideMapPlan

REPO = Path(__file__).resolve().parents[1]
SLIDE_MPP = 0.5
MODEL = {"variant": "daen", "backbone": "resnet18", "width": 0.5, "input_size": 224, "input_mpp": 1.0}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _config(batch_size: int, workers: int) -> SegmentConfig:
    from histo_daen.config.schema import SegmentConfig

    return SegmentConfig(batch_size=batch_size, workers=workers)


def _plan(slide_path: Path, checkpoint: Path, config: SegmentConfig) -> tuple[SlideMapPlan, CamPredictor]:
    import torch

    from histo_daen.inference.slide import CamPredictor, plan_slide_map
    from histo_daen.models.checkpoint import load_model
    from histo_daen.slide import open_slide

    loaded = load_model(checkpoint, device=torch.device("cpu"))
    with open_slide(slide_path) as slide:
        plan = plan_slide_map(
            slide, model_mpp=loaded.model_config.input_mpp, tile_size=loaded.model_config.input_size, config=config
        )
    return plan, CamPredictor(
        loaded.model, loaded.model_config.num_classes, config.inference, stitching=config.stitching
    )


def child(mode: str, slide_path: Path, checkpoint: Path, batch_size: int, workers: int) -> dict[str, float]:
    """One measurement in this process; returns figures for the parent."""
    import numpy as np
    import torch

    config = _config(batch_size, workers)
    device = torch.device("cpu")
    if mode == "segment":
        from histo_daen.jobs.segment import segment_cohort

        with tempfile.TemporaryDirectory(dir=REPO / "bench_output") as out:
            started = time.perf_counter()
            report = segment_cohort([slide_path], out, checkpoint=checkpoint, config=config, device=device)
            seconds = time.perf_counter() - started
        (outcome,) = report.outcomes
        if outcome.status != "done" or outcome.result is None or outcome.result.stats is None:
            raise RuntimeError(f"segment failed: {outcome.error}")
        return {"seconds": seconds, "n_tiles": outcome.result.stats.n_tiles, "peak_mb": _peak_rss_mb()}
    plan, predictor = _plan(slide_path, checkpoint, config)
    if mode == "baseline":
        return {"n_tiles": len(plan.tiles), "peak_mb": _peak_rss_mb()}
    if mode == "streaming":
        from histo_daen.classes import LUAD
        from histo_daen.export.zarr_map import open_map_writer
        from histo_daen.inference.slide import segment_slide

        with tempfile.TemporaryDirectory(dir=REPO / "bench_output") as out:
            writer = open_map_writer(
                Path(out) / "map.zarr",
                shape_hw=plan.shape_hw,
                classes=LUAD,
                mpp0=plan.mpp0,
                map_downsample=plan.map_downsample,
                chunk_size=config.chunk_size,
            )
            stats = segment_slide(
                plan, writer, predictor, device=device, batch_size=batch_size, workers=workers, amp=config.amp
            )
        return {"seconds": stats.seconds, "in_model": stats.model_seconds, "peak_mb": _peak_rss_mb()}
    if mode == "model":
        from histo_daen.slide import open_slide
        from histo_daen.tiling import read_tile

        with open_slide(slide_path) as slide:
            images = np.stack([read_tile(slide, planned.tile, plan.tile_size) for planned in plan.tiles])
        seconds = 0.0
        for start in range(0, len(images), batch_size):
            began = time.perf_counter()
            batch = torch.from_numpy(images[start : start + batch_size]).to(device).permute(0, 3, 1, 2).float() / 255
            predictor(batch).scores.cpu()
            seconds += time.perf_counter() - began
        return {"seconds": seconds, "n_tiles": len(images)}
    raise ValueError(f"unknown mode {mode!r}")


def _run_child(mode: str, slide: Path, checkpoint: Path, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", mode, str(slide), str(checkpoint)]
    command += ["--batch-size", str(args.batch_size), "--workers", str(args.workers)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{mode} on {slide.name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _prepare(size_wh: tuple[int, int]) -> tuple[Path, Path, Path]:
    import torch

    from histo_daen.config.schema import ModelConfig
    from histo_daen.data.synthetic_slide import write_synthetic_slide
    from histo_daen.models import build_model, checkpoint_state, save_checkpoint

    folder = REPO / "bench_output" / "segment"
    folder.mkdir(parents=True, exist_ok=True)
    slides = []
    for name, scale in (("a", 1), ("b", 2)):
        width, height = size_wh[0] * scale, size_wh[1] * scale
        path = folder / f"{name}_{width}x{height}.svs"
        if not path.exists():
            print(f"writing {path.name} ...", flush=True)
            write_synthetic_slide(path, size_wh=(width, height), mpp=SLIDE_MPP, levels=4, seed=11)
        slides.append(path)
    checkpoint = folder / "daen_untrained.pt"
    if not checkpoint.exists():
        torch.manual_seed(0)
        save_checkpoint(checkpoint, checkpoint_state(build_model(ModelConfig(**MODEL))))  # type: ignore[arg-type]
    return slides[0], slides[1], checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="8192x6144", help="slide A level-0 WIDTHxHEIGHT; B is twice each side")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="tile-reading threads")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timed measurement; the fastest counts")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SLIDE", "CHECKPOINT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, slide, checkpoint = args.child
        print(json.dumps(child(mode, Path(slide), Path(checkpoint), args.batch_size, args.workers)))
        return

    width, height = (int(v) for v in args.size.lower().split("x"))
    slide_a, slide_b, checkpoint = _prepare((width, height))
    print(
        f"model: untrained DAEN {MODEL['backbone']} width {MODEL['width']}, {MODEL['input_size']}-px tiles at "
        f"{MODEL['input_mpp']} um/px; batch {args.batch_size}; {args.workers} reader threads; "
        f"{os.cpu_count()} CPU cores; fastest of {args.repeat} runs"
    )
    results = {}
    for slide in (slide_a, slide_b):
        figures = {}
        for mode in ("baseline", "model", "streaming", "segment"):
            print(f"  {slide.name}: {mode} ...", flush=True)
            runs = [_run_child(mode, slide, checkpoint, args) for _ in range(1 if mode == "baseline" else args.repeat)]
            # The fastest of the repeats (least disturbed by other processes); memory is the same in each.
            figures[mode] = min(runs, key=lambda run: run.get("seconds", 0.0))
        results[slide.name] = figures

    names = list(results)
    rows = [
        ("tissue tiles", lambda f: f"{f['baseline']['n_tiles']:.0f}"),
        ("model only (s)", lambda f: f"{f['model']['seconds']:.1f}"),
        ("streaming inference (s)", lambda f: f"{f['streaming']['seconds']:.1f}"),
        ("  of which in the model (s)", lambda f: f"{f['streaming']['in_model']:.1f}"),
        ("segment, whole command (s)", lambda f: f"{f['segment']['seconds']:.1f}"),
        ("streaming / model only", lambda f: f"{f['streaming']['seconds'] / f['model']['seconds']:.3f}"),
        ("segment / model only", lambda f: f"{f['segment']['seconds'] / f['model']['seconds']:.3f}"),
        ("tiles/s, streaming", lambda f: f"{f['baseline']['n_tiles'] / f['streaming']['seconds']:.1f}"),
        ("tiles/s, model only", lambda f: f"{f['baseline']['n_tiles'] / f['model']['seconds']:.1f}"),
        ("peak RSS baseline (MB)", lambda f: f"{f['baseline']['peak_mb']:.0f}"),
        ("peak RSS streaming (MB)", lambda f: f"{f['streaming']['peak_mb']:.0f}"),
        ("peak RSS segment (MB)", lambda f: f"{f['segment']['peak_mb']:.0f}"),
        ("  segment above baseline (MB)", lambda f: f"{f['segment']['peak_mb'] - f['baseline']['peak_mb']:.0f}"),
    ]
    print()
    print(f"{'':32}{names[0]:>24}{names[1]:>24}")
    for label, value in rows:
        print(f"{label:32}{value(results[names[0]]):>24}{value(results[names[1]]):>24}")
    a, b = results[names[0]], results[names[1]]
    print()
    print(f"area B / A: 4.00; tiles B / A: {b['baseline']['n_tiles'] / a['baseline']['n_tiles']:.2f}")
    print(f"peak RSS of segment B / A: {b['segment']['peak_mb'] / a['segment']['peak_mb']:.2f}")
    print(
        "overhead of streaming over the model alone: "
        f"A {100 * (a['streaming']['seconds'] / a['model']['seconds'] - 1):+.1f} %, "
        f"B {100 * (b['streaming']['seconds'] / b['model']['seconds'] - 1):+.1f} %"
    )


if __name__ == "__main__":
    main()
