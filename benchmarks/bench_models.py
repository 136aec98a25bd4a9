"""Time and peak memory of the network variants, as ratios against ``seam`` measured in the same run.

For each backbone x input size x pass (``forward``: eval mode under ``inference_mode``; ``train``: train mode,
forward + backward of ``logits.sum() + cams_refined.mean()``) x precision mode, every variant runs in a fresh
process (so peak memory is its own): ``--warmup`` untimed calls, then ``--repeats`` timed calls (median wall
time and process CPU time per batch), and the peak memory of the pass (CPU: peak RSS, reset after building the
model, minus the RSS before the first call; CUDA: ``max_memory_allocated`` minus the allocation before it), beside
the model's own weights (``wts MiB``, held before the pass). With
``--rounds`` > 1 the variants are measured in turn, round after round, and each round's ratio against ``seam``
(measured minutes apart at most) is kept; the table shows medians. Ratios divide by ``seam`` with the same
backbone, size, mode and pass, so the cost of the CSM (``daen`` / ``seam``) is a number; ``t/fp32`` divides by the
``fp32`` mode.

CPU seconds (``cpu s``) are the process's own CPU time: on a machine shared with other jobs they vary much less
than wall time, which counts the time other processes held the cores.

Full-width ResNet38 at batch 8 takes about a minute per forward on two idle CPU cores, so the default run is
ResNet38 and ResNet-50 at 224 px with ``seam``, ``daen`` and ``cam``, one call each. The paper's full grid and
the precision question:

    python benchmarks/bench_models.py --sizes 224 448 --variants seam daen cm sm cam --device cuda --repeats 5
    python benchmarks/bench_models.py --backbones resnet50 --modes fp32 channels_last bf16 channels_last+bf16

timm backbones (``timm:<name>``, random weights: the cost does not depend on them) against ResNet-50: the
``t/r50``, ``cpu/r50`` and ``mem/r50`` columns divide by ``resnet50`` with the same variant, size, pass and mode,
measured in the same run (the baseline is added when missing, and measured first):

    python benchmarks/bench_models.py --backbones resnet50 timm:resnet50 timm:vit_base_patch16_224 \
        timm:vit_large_patch16_224 --variants daen --passes forward --batch 4

Nothing here is asserted; the printout is the result.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

MODES = ("fp32", "channels_last", "bf16", "channels_last+bf16")
BASELINE = "resnet50"  # what timm backbones are compared with (t/r50, mem/r50)
PASSES = ("forward", "train")


@dataclass(frozen=True)
class Case:
    backbone: str
    variant: str
    size: int
    batch: int
    mode: str
    pass_name: str
    width: float
    device: str
    warmup: int
    repeats: int
    threads: int


@dataclass(frozen=True)
class Measurement:
    case: Case
    seconds: float  # median wall time per call
    cpu_seconds: float  # median process CPU time per call (all threads)
    peak_mib: float  # peak memory of the pass above what was held before it
    weights_mib: float  # parameters and buffers of the model (float32), held before the pass


def _status_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now; VmHWM: peak since the last reset)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    """Make VmHWM start again from the current RSS (Linux >= 4.0), so building the model does not count."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _measure(case: Case) -> Measurement:
    """Run in a fresh process: build, run warmup + repeats, time each call, read the peak memory."""
    import torch

    from histo_daen.models import build_model

    if case.threads > 0:
        torch.set_num_threads(case.threads)
    torch.manual_seed(0)
    device = torch.device(case.device)
    # input_size: a ViT's position-embedding grid (the built-in backbones take any size regardless).
    model = build_model(variant=case.variant, backbone=case.backbone, width=case.width, input_size=case.size)
    model = model.to(device)
    x = torch.rand(case.batch, 3, case.size, case.size, device=device)
    if "channels_last" in case.mode:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in case.mode)
    if case.pass_name == "forward":
        model.eval()
    else:
        model.train()

    def one_call() -> None:
        if case.pass_name == "forward":
            with torch.inference_mode(), autocast:
                model(x)
        else:
            model.zero_grad(set_to_none=True)
            with autocast:
                out = model(x)
                loss = out.logits.float().sum()
                if out.cams_refined is not None:
                    loss = loss + out.cams_refined.float().mean()
            loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
    else:
        _reset_peak_rss()
        before = _status_mib("VmRSS")
    times, cpu_times = [], []
    for index in range(case.warmup + case.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        one_call()
        if index >= case.warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20 - before
    else:
        peak = _status_mib("VmHWM") - before
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / 2**20
    return Measurement(
        case=case,
        seconds=statistics.median(times),
        cpu_seconds=statistics.median(cpu_times),
        peak_mib=peak,
        weights_mib=weights,
    )


def _run_isolated(case: Case) -> Measurement:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_measure, case).result()


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["resnet38", "resnet50"], help="also timm:<name>")
    parser.add_argument("--variants", nargs="+", default=["seam", "daen", "cam"], help="seam is always added")
    parser.add_argument("--sizes", nargs="+", type=int, default=[224], help="input side in pixels")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["fp32"])
    parser.add_argument("--passes", nargs="+", choices=PASSES, default=list(PASSES))
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier (1.0 = published networks)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first [default: 0 on cpu, 2 on cuda]")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per process; the median is reported")
    parser.add_argument("--rounds", type=int, default=1, help="measure the variants in turn this many times")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--output", type=Path, default=None, help="also write the rows as CSV here")
    return parser.parse_args()


def _same_but(case: Case, **changes: object) -> Case:
    return Case(**(asdict(case) | changes))  # type: ignore[arg-type]


def main() -> None:
    args = _parse_args()
    warmup = args.warmup if args.warmup is not None else (0 if args.device == "cpu" else 2)
    variants = ["seam", *[v for v in args.variants if v != "seam"]]
    import torch

    threads = args.threads or torch.get_num_threads()
    with open("/proc/loadavg") as handle:
        load = " ".join(handle.read().split()[:3])
    print(
        f"torch {torch.__version__}, device {args.device}, {threads} CPU threads, batch {args.batch}, "
        f"width {args.width}, warmup {warmup}, repeats {args.repeats}, rounds {args.rounds}, load average {load}"
    )
    name_width = max(9, *(len(b) for b in args.backbones))
    header = (
        f"{'backbone':<{name_width}} {'size':>4} {'pass':<7} {'mode':<18} {'variant':<7} {'s/batch':>8} {'img/s':>6} "
    )
    header += f"{'cpu s':>7} {'peak MiB':>8} {'wts MiB':>7} {'t/seam':>6} {'cpu/seam':>8} {'mem/seam':>8} {'t/fp32':>6}"
    header += f" {'t/r50':>6} {'cpu/r50':>7} {'mem/r50':>7}"
    print(header)
    rows: list[Measurement] = []
    backbones = list(args.backbones)
    if any(b.startswith("timm:") for b in backbones):  # the baseline first, so every row can divide by it
        backbones = [BASELINE, *(b for b in backbones if b != BASELINE)]
    baseline: dict[Case, list[Measurement]] = {}
    for backbone in backbones:
        for size in args.sizes:
            for pass_name in args.passes:
                combo: dict[Case, list[Measurement]] = {}
                for _ in range(args.rounds):
                    for mode in args.modes:
                        for variant in variants:
                            case = Case(
                                backbone, variant, size, args.batch, mode, pass_name, args.width, args.device,
                                warmup, args.repeats, args.threads,
                            )  # fmt: skip
                            combo.setdefault(case, []).append(_run_isolated(case))
                if backbone == BASELINE:
                    baseline.update(combo)
                for case, results in combo.items():
                    rows.extend(results)
                    base = baseline.get(_same_but(case, backbone=BASELINE, width=1.0))
                    base_ratios = "     -       -       -"
                    if base is not None:
                        pairs_base = list(zip(results, base, strict=True))
                        t_base = statistics.median(r.seconds / b.seconds for r, b in pairs_base)
                        cpu_base = statistics.median(r.cpu_seconds / b.cpu_seconds for r, b in pairs_base)
                        mem_base = statistics.median(r.peak_mib / max(b.peak_mib, 1e-9) for r, b in pairs_base)
                        base_ratios = f"{t_base:6.2f} {cpu_base:7.2f} {mem_base:7.2f}"
                    seam = combo[_same_but(case, variant="seam")]
                    fp32 = combo.get(_same_but(case, mode="fp32"))
                    pairs = list(zip(results, seam, strict=True))
                    time_ratio = statistics.median(r.seconds / s.seconds for r, s in pairs)
                    cpu_ratio = statistics.median(r.cpu_seconds / s.cpu_seconds for r, s in pairs)
                    mem_ratio = statistics.median(r.peak_mib / max(s.peak_mib, 1e-9) for r, s in pairs)
                    mode_ratio = "-"
                    if fp32 is not None:
                        per_round = [r.seconds / f.seconds for r, f in zip(results, fp32, strict=True)]
                        mode_ratio = f"{statistics.median(per_round):.2f}"
                    seconds = statistics.median(r.seconds for r in results)
                    print(
                        f"{backbone:<{name_width}} {size:>4} {pass_name:<7} {case.mode:<18} {case.variant:<7} "
                        f"{seconds:8.2f} "
                        f"{args.batch / seconds:6.2f} {statistics.median(r.cpu_seconds for r in results):7.1f} "
                        f"{statistics.median(r.peak_mib for r in results):8.0f} {results[0].weights_mib:7.0f} "
                        f"{time_ratio:6.3f} {cpu_ratio:8.3f} "
                        f"{mem_ratio:8.3f} {mode_ratio:>6} {base_ratios}",
                        flush=True,
                    )
    if args.output is not None:
        lines = ["backbone,size,pass,mode,variant,batch,seconds,cpu_seconds,peak_mib"]
        lines += [
            f"{r.case.backbone},{r.case.size},{r.case.pass_name},{r.case.mode},{r.case.variant},{r.case.batch},"
            f"{r.seconds:.4f},{r.cpu_seconds:.4f},{r.peak_mib:.1f}"
            for r in rows
        ]
        args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
