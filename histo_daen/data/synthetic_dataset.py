"""A synthetic dataset in the exact LUAD-HistoSeg layout (reference.md §6.1-6.3), for tests, the demo and checks.

Each patch is a random layout of one to three tissue classes, often with white glass, drawn by the shared
renderer (:mod:`histo_daen.data.synthetic_tissue`, the one the synthetic slides use, so a model trained here
segments those slides). Training patches carry their label in the name (``{patient}-{x}-{y}-[a b c d].png``,
order TE, NEC, LYM, TAS); val/test patches have palette masks with index 4 for glass.

A patch's label lists the classes it shows: layouts in which a class covers less than ``min_class_fraction`` of
the patch are drawn again, so every labelled class is visible and every visible class is labelled. Every patch
has its own generator keyed by (seed, split, number), so the output does not depend on the order of writing.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from histo_daen import __version__
from histo_daen.atomic import atomic_dir, atomic_write, atomic_write_text, check_output
from histo_daen.classes import LUAD
from histo_daen.data.masks import write_mask
from histo_daen.data.synthetic_tissue import (
    GLASS_INDEX,
    RENDER_PIXEL_BYTES,
    TissueStyle,
    random_region_map,
    render_tissue,
)
from histo_daen.errors import ConfigError
from histo_daen.progress import progress_bar
from histo_daen.resources import require_disk, require_memory, require_workers, usable_cores

__all__ = ["SyntheticDataset", "SyntheticPatch", "synthetic_patch", "write_synthetic_luad"]

logger = logging.getLogger(__name__)

_SPLIT_KEYS = {"train": 0, "val": 1, "test": 2}
_N_CLASSES_P = (0.35, 0.45, 0.20)  # one, two or three tissue classes per patch
_MAX_DRAWS = 50


@dataclass(frozen=True)
class SyntheticPatch:
    """One generated patch: (H, W, 3) uint8 RGB ``image``, (H, W) uint8 ``mask`` (4 = glass), 0/1 ``label``."""

    image: np.ndarray
    mask: np.ndarray
    label: tuple[int, ...]


@dataclass(frozen=True)
class SyntheticDataset:
    """What :func:`write_synthetic_luad` wrote: the root and the number of patches per split."""

    root: Path
    n_train: int
    n_val: int
    n_test: int


def synthetic_patch(
    rng: np.random.Generator,
    *,
    patch_size: int = 224,
    mpp: float = 1.0,
    glass_probability: float = 0.5,
    mean_region_um: float = 110.0,
    min_class_fraction: float = 0.03,
    style: TissueStyle | None = None,
) -> SyntheticPatch:
    """Draw one LUAD-like patch.

    Args:
        rng: the patch's generator.
        patch_size: side in pixels.
        mpp: microns per pixel (LUAD-HistoSeg: about 1).
        glass_probability: chance that white glass is among the regions.
        mean_region_um: typical region diameter; smaller gives more classes per patch and finer borders.
        min_class_fraction: a class must cover at least this share of the patch to be there (and labelled).
        style: the renderer's difficulty knobs.

    Returns:
        The patch; its label is exactly the set of tissue classes in its mask.
    """
    n_classes = len(LUAD)
    shape_hw = (patch_size, patch_size)
    minimum = min_class_fraction * patch_size * patch_size
    for _ in range(_MAX_DRAWS):
        k = int(rng.choice(3, p=_N_CLASSES_P)) + 1
        chosen = sorted(int(c) for c in rng.choice(n_classes, size=k, replace=False))
        with_glass = bool(rng.random() < glass_probability)
        classes = chosen + ([GLASS_INDEX] if with_glass else [])
        weights = [1.0] * len(chosen) + ([0.6] if with_glass else [])
        layout = random_region_map(
            shape_hw, classes=classes, mean_region_um=mean_region_um, mpp=mpp, rng=rng, weights=weights
        )
        counts = np.bincount(layout.ravel(), minlength=GLASS_INDEX + 1)
        tissue = counts[:n_classes]
        present = tissue > 0
        if present.any() and (tissue[present] >= minimum).all() and tissue.sum() >= 4 * minimum:
            break
    else:  # pragma: no cover - rejection fails only for absurd knobs; a single class then fills the patch
        layout = np.full(shape_hw, chosen[0], dtype=np.int64)
        present = np.bincount(layout.ravel(), minlength=n_classes)[:n_classes] > 0
    image = render_tissue(layout, mpp=mpp, rng=rng, style=style)
    return SyntheticPatch(image=image, mask=layout.astype(np.uint8), label=tuple(int(p) for p in present))


def _patch_rng(seed: int, split: str, number: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_KEYS[split], number])


def _patch_stem(rng: np.random.Generator, number: int, patch_size: int) -> str:
    """``{patient}-{x}-{y}`` as in LUAD-HistoSeg; x grows with the patch number, so stems are unique per split."""
    patient = int(rng.integers(1_000_000, 10_000_000))
    y = int(rng.integers(0, 200)) * patch_size
    return f"{patient}-{number * patch_size}-{y}"


def _write_png(path: Path, image: np.ndarray) -> None:
    with atomic_write(path) as tmp:
        # Level 1: about 3x faster than Pillow's default 6 for ~15 % larger files; the dataset is regenerable.
        Image.fromarray(image).save(tmp, format="PNG", compress_level=1)


def write_synthetic_luad(
    output_dir: str | os.PathLike[str],
    *,
    n_train: int = 200,
    n_val: int = 40,
    n_test: int = 40,
    seed: int = 0,
    patch_size: int = 224,
    mpp: float = 1.0,
    glass_probability: float = 0.5,
    mean_region_um: float = 110.0,
    style: TissueStyle | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> SyntheticDataset:
    """Write a synthetic LUAD-HistoSeg folder: ``train/``, ``val/{img,mask}/``, ``test/{img,mask}/``, ``Readme.txt``.

    The folder is built as ``<output_dir>.partial/`` and renamed when complete; a killed run resumes there,
    skipping patches already written (each patch depends only on the seed, the split and its number).

    Args:
        output_dir: the dataset folder to create.
        n_train, n_val, n_test: patches per split.
        seed: base seed; the same arguments give byte-identical files.
        patch_size: side in pixels (LUAD: 224).
        mpp: microns per pixel (LUAD: about 1).
        glass_probability, mean_region_um: see :func:`synthetic_patch`.
        style: the renderer's difficulty knobs (default :class:`TissueStyle`).
        workers: processes drawing patches (default: all cores; 0 or 1: this process).
        overwrite: replace an existing ``output_dir``.
        progress: tqdm bar.

    Raises:
        OutputExistsError: ``output_dir`` exists, is not empty and ``overwrite`` is False.
        PathError: ``output_dir`` cannot be written.
    """
    target = Path(output_dir)
    if min(n_train, n_val, n_test) < 0:
        raise ConfigError("patch counts must be >= 0")
    if not 32 <= patch_size <= 8192:
        raise ConfigError(f"patch_size must be in [32, 8192] pixels, got {patch_size}")
    if not (math.isfinite(mpp) and 0.01 <= mpp <= 1000):
        raise ConfigError(f"mpp must be a finite number of microns per pixel in [0.01, 1000], got {mpp}")
    check_output(target, kind="folder", overwrite=overwrite)
    n_workers = usable_cores() if workers is None else workers
    require_workers(n_workers, setting="workers")
    pixels = patch_size * patch_size
    require_memory(
        pixels * RENDER_PIXEL_BYTES * max(1, n_workers),
        what=f"drawing {patch_size}x{patch_size}-px patches in {max(1, n_workers)} process(es)",
        hint="Choose a smaller --patch-size.",
    )
    # A PNG of rendered tissue is about as big as its raw pixels (texture noise does not compress); masks add little.
    require_disk(
        (n_train + n_val + n_test) * pixels * 3, target.parent, what="the dataset", hint="Write fewer patches."
    )
    if target.exists():
        shutil.rmtree(target)  # an empty folder, or one check_output let --overwrite replace
    counts = {"train": n_train, "val": n_val, "test": n_test}
    total = sum(counts.values())
    style = style or TissueStyle()
    with atomic_dir(target) as building, progress_bar(total=total, unit="patch", enabled=progress) as bar:
        jobs = []
        for split, count in counts.items():
            folders = _split_folders(building, split)
            # Patches of a killed run (files are written atomically, so a present file is complete).
            done = {p.name.split("-[")[0].removesuffix(".png") for p in folders[-1].iterdir()}
            for number in range(count):
                if _patch_stem(_patch_rng(seed, split, number), number, patch_size) in done:
                    bar.update(1)
                else:
                    jobs.append((tuple(folders), split, number))
        write = partial(
            _write_job,
            seed=seed,
            patch_size=patch_size,
            mpp=mpp,
            glass_probability=glass_probability,
            mean_region_um=mean_region_um,
            style=style,
        )
        if n_workers <= 1 or len(jobs) < 2 * n_workers:
            for job in jobs:
                write(job)
                bar.update(1)
        else:
            # spawn, not fork: the caller may hold threads (torch, OpenMP) that a forked child would inherit locked.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
                for _ in pool.map(write, jobs, chunksize=8):
                    bar.update(1)
        settings = {
            "generator": "histo-daen synth-dataset",
            "histo_daen_version": __version__,
            "seed": seed,
            "counts": counts,
            "patch_size": patch_size,
            "mpp": mpp,
            "glass_probability": glass_probability,
            "mean_region_um": mean_region_um,
            "style": asdict(style),
        }
        atomic_write_text(building / "synthetic_dataset.json", json.dumps(settings, indent=2) + "\n")
        atomic_write_text(building / "Readme.txt", _README.format(**counts, seed=seed, mpp=mpp, size=patch_size))
    logger.info("wrote %d synthetic patches to %s", total, target)
    return SyntheticDataset(root=target, n_train=n_train, n_val=n_val, n_test=n_test)


def _split_folders(root: Path, split: str) -> Sequence[Path]:
    if split == "train":
        folder = root / "train"
        folder.mkdir(parents=True, exist_ok=True)
        return (folder,)
    image_dir, mask_dir = root / split / "img", root / split / "mask"
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    return (image_dir, mask_dir)


def _write_job(
    job: tuple[tuple[Path, ...], str, int],
    *,
    seed: int,
    patch_size: int,
    mpp: float,
    glass_probability: float,
    mean_region_um: float,
    style: TissueStyle,
) -> None:
    folders, split, number = job
    rng = _patch_rng(seed, split, number)
    stem = _patch_stem(rng, number, patch_size)  # drawn first: a resumed run knows it without rendering
    patch = synthetic_patch(
        rng,
        patch_size=patch_size,
        mpp=mpp,
        glass_probability=glass_probability,
        mean_region_um=mean_region_um,
        style=style,
    )
    if split == "train":
        label = " ".join(str(v) for v in patch.label)
        _write_png(folders[0] / f"{stem}-[{label}].png", patch.image)
        return
    # The image first, the mask last: a patch counts as done when its mask exists (``done`` lists the masks).
    _write_png(folders[0] / f"{stem}.png", patch.image)
    write_mask(folders[1] / f"{stem}.png", patch.mask, LUAD)


_README = """Synthetic LUAD-HistoSeg-format dataset written by histo-daen synth-dataset (seed {seed}).

Not real tissue: procedurally drawn H&E-like patches for tests, demos and pipeline checks.
Layout and names follow LUAD-HistoSeg: {size} x {size} px RGB PNG at {mpp} um/px.
  train/  {train} patches, label in the name: <patient>-<x>-<y>-[TE NEC LYM TAS].png
  val/    {val} patches: img/<name>.png and mask/<name>.png (palette PNG: 0 TE, 1 NEC, 2 LYM, 3 TAS, 4 white)
  test/   {test} patches, same as val/
"""
