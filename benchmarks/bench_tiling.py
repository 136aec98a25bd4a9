"""Tiling speed and memory: ``histo-daen tile`` against the plain way, measured in one run on the same tiles.

The slide: a synthetic Aperio-style JPEG SVS, 20000 x 15000 px at 0.25 um/px (40x), tissue nearly everywhere,
4 pyramid levels (downsamples 1, 2, 4, 8). Written once into ``bench_output/`` and reused.

Compared, each in its own process so its memory is its own. Times come from runs left alone; peak memory (PSS
summed over the process and its children, sampled from /proc every 20 ms) from one more run of each, because the
sampling itself takes CPU that a multi-process command on a 2-core machine would otherwise use:

- plain: one process, ``openslide.OpenSlide.read_region`` at level 0 of each tissue tile (896 x 896 px for 224 px
  at 1 um/px), RGBA -> RGB, resize with Pillow's area filter (BOX), ``Image.save(path)`` (PNG, Pillow's default
  level 6). The tile list is handed to it: its time is the loop alone, no start-up, no tissue detection.
- histo-daen tile: the command a user runs, timed from process start to exit (start-up, tissue mask, tiles,
  pictures, manifest, sync), with ``--workers`` processes.
- histo-daen tile --level0 --backend tiffslide: the command reading level 0 like plain (identical pixels), with
  tiffslide, whose tifffile + libjpeg-turbo reads of level-0 JPEG tiles take about half OpenSlide's time here.
- extraction only: our parallel reader/writer (``map_tiles`` + ``write_tile``) over the same tile list, with the
  same worker count, including worker start-up: the command minus its fixed costs.
- extraction at level 0: the same with ``use_pyramid=False`` (read level 0 and shrink, like plain): the speed-up of
  parallel workers and faster PNG encoding alone, and the check that its tiles are pixel-identical to plain's.

Fixed costs of the command (what it does besides extracting tiles), each timed alone, median of ``--repeat`` runs:
interpreter start; imports of the command's modules and of the tissue mask's (scipy.ndimage); the worker server's
preload (beside the critical path, but CPU on a small machine); opening the slide; reading the thumbnail; the tissue
mask; the pictures; config + manifest; and making the tiles durable after writing them (``os.sync()`` of every
filesystem, against fsync of the files written, both after writing as many tile-sized files).

Pixels: the tiles of histo-daen tile are compared with plain's (they read a pyramid level, plain reads level 0, so
they differ by the scanner-level JPEG and averaging), and those of the level-0 run must equal plain's exactly.
Nothing here asserts: it prints figures and ratios measured in this run.

Usage: ``make bench`` or ``python benchmarks/bench_tiling.py [--workers 2] [--size 20000x15000] [--repeat 3]``
(``--repeat`` runs each histo-daen command that many times and reports the fastest, beside one plain loop).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TILE_SIZE = 224
TARGET_MPP = 1.0
SLIDE_MPP = 0.25


# -- memory of a process tree ------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _tree(pid: int) -> list[int]:
    pids, frontier = [pid], [pid]
    while frontier:
        frontier = [child for parent in frontier for child in _children(parent)]
        pids += frontier
    return pids


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """Samples the summed PSS of a process and all its descendants; ``peak_mib`` after ``stop()``."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid, self.interval_s, self.peak_kib = pid, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, sum(_pss_kib(p) for p in _tree(self.pid)))
            self._stop.wait(self.interval_s)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kib / 1024


def run_measured(command: list[str], *, memory: bool = False) -> tuple[float, float, str]:
    """Run a command; (wall seconds, peak PSS MiB of its process tree or NaN, stdout).

    ``memory`` samples the process tree every 20 ms: about 2 ms of CPU per sample to find the tree in /proc, plus
    the PSS reads, which slows what is measured on a 2-core machine. Timings come from runs without it.
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    monitor = PeakMemory(process.pid) if memory else None
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    peak = monitor.stop() if monitor is not None else float("nan")
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed ({process.returncode}):\n{stderr[-3000:]}")
    return seconds, peak, stdout


# -- the measured programs (run as subprocesses of this script) ----------------------------------------------------


def plain_loop(slide_path: str, boxes_path: str, out: str) -> None:
    """The plain way: single process, level-0 read_region, BOX resize, Pillow PNG save."""
    import openslide
    from PIL import Image

    boxes = json.loads(Path(boxes_path).read_text())
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    slide = openslide.OpenSlide(slide_path)
    started = time.perf_counter()
    for x, y, width, height in boxes:
        region = slide.read_region((x, y), 0, (width, height)).convert("RGB")
        region.resize((TILE_SIZE, TILE_SIZE), Image.Resampling.BOX).save(out_dir / f"x{x}_y{y}.png")
    print(json.dumps({"seconds": time.perf_counter() - started, "tiles": len(boxes)}))


def extraction(slide_path: str, boxes_path: str, out: str, workers: int, use_pyramid: bool) -> None:
    """Our reader/writer alone over the given tiles (worker start-up included)."""
    from functools import partial

    from histo_daen.slide import open_slide
    from histo_daen.tiling import Tile, TileWriter, map_tiles, write_tile

    boxes = json.loads(Path(boxes_path).read_text())
    with open_slide(slide_path) as slide:
        level = slide.best_level_for_downsample(TARGET_MPP / SLIDE_MPP) if use_pyramid else 0
        source = slide.source()
    tiles = [Tile(0, 0, tuple(box), level, 1.0) for box in boxes]  # type: ignore[arg-type]
    writer = TileWriter(Path(out), "t", TILE_SIZE)
    started = time.perf_counter()
    count = sum(1 for _ in map_tiles(source, tiles, partial(write_tile, writer), workers=workers))
    print(json.dumps({"seconds": time.perf_counter() - started, "tiles": count, "level": level}))


def _median_seconds(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def fixed_costs(slide_path: str, repeat: int) -> None:
    """Each fixed cost of ``histo-daen tile`` alone (median seconds), printed as JSON lines ``[name, seconds]``."""
    import tempfile

    from histo_daen.config import dump_config
    from histo_daen.config.schema import TileConfig
    from histo_daen.slide import open_slide
    from histo_daen.tiling import tile_grid
    from histo_daen.tiling.manifest import ManifestRow, write_header, write_manifest
    from histo_daen.tiling.pictures import write_tiling_pictures
    from histo_daen.tiling.tissue import tissue_mask

    def in_new_process(code: str) -> float:
        return _median_seconds(lambda: subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO), repeat)

    command_modules = "import histo_daen.cli.tile, histo_daen.jobs.tile, histo_daen.tiling.folder"
    start = in_new_process("pass")
    command = in_new_process(command_modules)
    rows: list[tuple[str, float]] = [
        ("interpreter start (python -c pass)", start),
        ("imports: the tile command's modules", command - start),
        (
            "imports: the tissue mask's (scipy.ndimage), after those",
            in_new_process(f"{command_modules}, scipy.ndimage") - command,
        ),
        ("worker server preload (beside the critical path)", in_new_process(_preload_code()) - start),
    ]
    with open_slide(slide_path) as slide:
        rows.append(("open the slide (validated)", _median_seconds(lambda: open_slide(slide_path).close(), repeat)))
        downsample = 8.0 / slide.require_mpp()
        rows.append(("read the thumbnail (8 um/px)", _median_seconds(lambda: slide.downsampled(downsample), repeat)))
        thumbnail = slide.downsampled(downsample)
        rows.append(("tissue mask", _median_seconds(lambda: tissue_mask(thumbnail, thumbnail_mpp=8.0), repeat)))
        grid = tile_grid(slide, target_mpp=TARGET_MPP, tile_size=TILE_SIZE, min_tissue=0.5)
        with tempfile.TemporaryDirectory(dir=REPO / "bench_output") as scratch:
            folder = Path(scratch)
            rows.append(("pictures", _median_seconds(lambda: write_tiling_pictures(folder, slide, grid), repeat)))
            manifest = [ManifestRow(tile, f"tiles/t{index}.png", 100_000, "0" * 64) for index, tile in enumerate(grid)]

            def config_and_manifest() -> None:
                dump_config(TileConfig(), folder / "config.yaml")
                write_manifest(folder / "manifest.csv", "slide.svs", TARGET_MPP, manifest)
                write_header(folder / "manifest.json", {"n_tiles": len(manifest)})

            rows.append(("config + manifest", _median_seconds(config_and_manifest, repeat)))
            for name, make_durable in _durability_steps().items():
                times = []
                for run in range(repeat):
                    written = _write_tile_sized_files(folder / f"{name[:8].strip()}{run}", len(grid))
                    started = time.perf_counter()
                    make_durable(written)
                    times.append(time.perf_counter() - started)
                rows.append((f"{name}, after writing {len(grid)} tile-sized files", statistics.median(times)))
    for row in rows:
        print(json.dumps(row))


def _preload_code() -> str:
    """What the worker server imports before it forks workers (as histo_daen.tiling.extract configures it)."""
    from histo_daen.tiling.extract import worker_preload

    return "import " + ", ".join(module for module in worker_preload("openslide") if module != "__main__")


def _durability_steps() -> dict[str, Callable[[list[Path]], None]]:
    from histo_daen.atomic import make_durable

    def sync_everything(_: list[Path]) -> None:
        os.sync()

    def fsync_written(paths: list[Path]) -> None:
        make_durable(paths, folders=[paths[0].parent])

    return {"os.sync() (every filesystem)": sync_everything, "fsync of the files written": fsync_written}


def _write_tile_sized_files(folder: Path, count: int) -> list[Path]:
    from histo_daen.atomic import atomic_write_bytes

    folder.mkdir(parents=True)
    data = os.urandom(100_000)  # a 224-px PNG tile is about 100 KB
    return [atomic_write_bytes(folder / f"t{index}.png", data, durable=False) for index in range(count)]


# -- the benchmark -------------------------------------------------------------------------------------------------


def _ensure_slide(folder: Path, size_wh: tuple[int, int]) -> Path:
    from histo_daen.data.synthetic_slide import write_synthetic_slide

    path = folder / f"bench_{size_wh[0]}x{size_wh[1]}.svs"
    if path.is_file() and path.with_name(path.stem + ".mask.json").is_file():
        print(f"slide: reusing {path}")
        return path
    print(f"slide: writing {path} (once; a minute or more) ...", flush=True)
    started = time.perf_counter()
    write_synthetic_slide(
        path, size_wh=size_wh, mpp=SLIDE_MPP, levels=4, kind="svs", compression="jpeg", tissue="full", seed=1
    )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"slide: written in {time.perf_counter() - started:.0f} s, writer peak RSS {peak_mib:.0f} MiB")
    return path


def _decode_all(folder: Path, names: list[str]) -> object:
    import numpy as np
    from PIL import Image

    return np.stack([np.asarray(Image.open(folder / name).convert("RGB")) for name in names])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "bench_output")
    parser.add_argument("--size", default="20000x15000", help="level-0 WIDTHxHEIGHT of the synthetic slide")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each histo-daen command; the fastest counts")
    parser.add_argument("--fixed-repeat", type=int, default=5, help="runs of each fixed cost (0: skip them)")
    parser.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one more, sampled run of each for peak PSS",
    )
    parser.add_argument("--mode", choices=["plain", "extract", "extract-level0", "fixed"], help=argparse.SUPPRESS)
    parser.add_argument("--slide", help=argparse.SUPPRESS)
    parser.add_argument("--boxes", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "plain":
        return plain_loop(args.slide, args.boxes, args.out)
    if args.mode in ("extract", "extract-level0"):
        return extraction(args.slide, args.boxes, args.out, args.workers, args.mode == "extract")
    if args.mode == "fixed":
        return fixed_costs(args.slide, args.fixed_repeat)

    import numpy as np

    from histo_daen.slide import open_slide
    from histo_daen.tiling import tile_grid
    from histo_daen.tiling.manifest import read_manifest

    width, height = (int(v) for v in args.size.lower().split("x"))
    args.output.mkdir(parents=True, exist_ok=True)
    slide_path = _ensure_slide(args.output, (width, height))
    runs = args.output / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir()

    with open_slide(slide_path) as slide:
        grid = tile_grid(slide, target_mpp=TARGET_MPP, tile_size=TILE_SIZE, min_tissue=0.5)
        levels = ", ".join(f"{d:g}" for d in slide.level_downsamples)
    boxes = [list(tile.box_level0) for tile in grid.tiles]
    boxes_path = runs / "boxes.json"
    boxes_path.write_text(json.dumps(boxes))
    decoded_gb = width * height * 3 / 1e9
    print(
        f"slide: {width}x{height} px at {SLIDE_MPP} um/px, JPEG, downsamples {levels}; level 0 decoded = "
        f"{decoded_gb:.2f} GB"
    )
    print(
        f"tiles: {len(boxes)} tissue tiles of {TILE_SIZE} px at {TARGET_MPP} um/px "
        f"({grid.tile_size_level0} px at level 0; histo-daen reads level {grid.level}); workers: {args.workers}; "
        f"cores here: {len(os.sched_getaffinity(0))}; load average before: {os.getloadavg()[0]:.1f}"
    )
    me = [sys.executable, str(Path(__file__).resolve())]
    common = ["--slide", str(slide_path), "--boxes", str(boxes_path)]

    def timed(command: list[str], out_dir: Path) -> tuple[float, str]:
        """Wall seconds and stdout of a run that writes into ``out_dir`` (emptied first), without memory sampling."""
        shutil.rmtree(out_dir, ignore_errors=True)
        seconds, _, stdout = run_measured(command)
        return seconds, stdout

    def peak_memory(command: list[str], out_dir: Path) -> float:
        """Peak PSS (MiB) of one more run, sampled (not timed)."""
        if not args.memory:
            return float("nan")
        shutil.rmtree(out_dir, ignore_errors=True)
        return run_measured(command, memory=True)[1]

    plain_command = [*me, "--mode", "plain", *common, "--out", str(runs / "plain")]
    plain_wall, out = timed(plain_command, runs / "plain")
    plain = json.loads(out)

    def tile_command(out: str, *options: str) -> list[str]:
        """``histo-daen tile`` on the slide into ``runs/out``, as a user runs it."""
        cli = [sys.executable, "-c", "from histo_daen.cli import main; main()", "tile"]
        return [*cli, str(slide_path), "-o", str(runs / out), *options]

    # The command and extraction alone, alternately, --repeat times each: the fastest run of each counts.
    ours_command = tile_command("ours", "--workers", str(args.workers))
    workers = ["--workers", str(args.workers)]
    extract_command = [*me, "--mode", "extract", *common, "--out", str(runs / "extract"), *workers]
    ours_runs, extract_runs = [], []
    for _ in range(max(1, args.repeat)):
        ours_runs.append(timed(ours_command, runs / "ours")[0])
        extract_runs.append(json.loads(timed(extract_command, runs / "extract")[1]))
    ours_wall = min(ours_runs)
    extract = min(extract_runs, key=lambda run: run["seconds"])
    level0_command = [*me, "--mode", "extract-level0", *common, "--out", str(runs / "level0"), *workers]
    level0 = json.loads(timed(level0_command, runs / "level0")[1])
    level0_cmd_command = tile_command("ours_level0", *workers, "--level0", "--backend", "tiffslide")
    level0_cmd_wall, _ = timed(level0_cmd_command, runs / "ours_level0")
    one_worker_command = tile_command("ours1", "--workers", "1")
    one_worker_wall, _ = timed(one_worker_command, runs / "ours1")
    # Peak memory: one sampled run of each (their outputs are the ones compared below).
    plain_peak = peak_memory(plain_command, runs / "plain")
    ours_peak = peak_memory(ours_command, runs / "ours")
    extract_peak = peak_memory(extract_command, runs / "extract")
    level0_peak = peak_memory(level0_command, runs / "level0")
    level0_cmd_peak = peak_memory(level0_cmd_command, runs / "ours_level0")
    one_worker_peak = peak_memory(one_worker_command, runs / "ours1")

    n = len(boxes)
    plain_rate = n / plain["seconds"]
    rows = [
        ("plain loop (level-0 read_region + resize + PNG save, 1 process)", plain["seconds"], plain_peak, "loop only"),
        (f"histo-daen tile --workers {args.workers} (whole command)", ours_wall, ours_peak, "process start to exit"),
        ("histo-daen tile --workers 1 (whole command)", one_worker_wall, one_worker_peak, "process start to exit"),
        (
            f"histo-daen tile --workers {args.workers} --level0 --backend tiffslide",
            level0_cmd_wall,
            level0_cmd_peak,
            "process start to exit",
        ),
        (
            f"extraction only, {args.workers} workers, pyramid level {extract['level']}",
            extract["seconds"],
            extract_peak,
            "workers start + tiles",
        ),
        (
            f"extraction only, {args.workers} workers, level 0 like plain",
            level0["seconds"],
            level0_peak,
            "workers start + tiles",
        ),
    ]
    print()
    print(f"{'':<66} {'seconds':>8} {'tiles/s':>8} {'x plain':>8} {'peak MiB':>9}  timed")
    for name, seconds, peak, what in rows:
        rate = n / seconds
        print(f"{name:<66} {seconds:8.2f} {rate:8.1f} {rate / plain_rate:8.2f} {peak:9.0f}  {what}")
    print(f"(plain's process took {plain_wall:.2f} s in all, start-up included)")
    walls = ", ".join(f"{wall:.2f}" for wall in ours_runs)
    ratios = ", ".join(f"{plain['seconds'] / wall:.2f}" for wall in ours_runs)
    extracts = ", ".join(f"{run['seconds']:.2f}" for run in extract_runs)
    print(f"(fastest of {len(ours_runs)}: whole command {walls} s = {ratios} x plain; extraction only {extracts} s)")
    if args.fixed_repeat > 0:
        fixed = [*me, "--mode", "fixed", "--slide", str(slide_path), "--fixed-repeat", str(args.fixed_repeat)]
        _, _, out = run_measured(fixed)
        print()
        print(f"fixed costs of the command, each alone (median of {args.fixed_repeat}; load {os.getloadavg()[0]:.1f})")
        for line in out.splitlines():
            name, seconds = json.loads(line)
            print(f"  {name:<72} {seconds:7.3f} s")

    rows_ours = read_manifest(runs / "ours" / slide_path.stem / "manifest.csv")
    ours_names = [Path(row["path"]).name for row in rows_ours]
    plain_names = [f"x{row['x']}_y{row['y']}.png" for row in rows_ours]
    plain_pixels = _decode_all(runs / "plain", plain_names).astype(np.int16)  # type: ignore[attr-defined]
    ours_pixels = _decode_all(runs / "ours" / slide_path.stem / "tiles", ours_names).astype(np.int16)  # type: ignore[attr-defined]
    level0_names = [f"t_x{row['x']}_y{row['y']}.png" for row in rows_ours]
    level0_pixels = _decode_all(runs / "level0", level0_names).astype(np.int16)  # type: ignore[attr-defined]
    difference = np.abs(ours_pixels - plain_pixels)
    print()
    print(
        f"pixels, histo-daen tile vs plain ({len(rows_ours)} tiles): "
        f"identical {np.array_equal(ours_pixels, plain_pixels)}"
        f"; mean |difference| {difference.mean():.2f}, 99th percentile {np.percentile(difference, 99):.0f}, "
        f"max {difference.max()} (0-255; pyramid level {grid.level} vs level 0 shrunk)"
    )
    print(f"pixels, extraction at level 0 vs plain: identical {np.array_equal(level0_pixels, plain_pixels)}")
    rows_level0 = read_manifest(runs / "ours_level0" / slide_path.stem / "manifest.csv")
    level0_cmd_pixels = _decode_all(
        runs / "ours_level0" / slide_path.stem / "tiles", [Path(row["path"]).name for row in rows_level0]
    )
    same_tiles = [(row["x"], row["y"]) for row in rows_level0] == [(row["x"], row["y"]) for row in rows_ours]
    print(
        "pixels, histo-daen tile --level0 --backend tiffslide vs plain: identical "
        f"{same_tiles and np.array_equal(level0_cmd_pixels, plain_pixels)}"
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
