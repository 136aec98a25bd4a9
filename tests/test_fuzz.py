"""Damaged inputs, byte by byte: a small real checkpoint, tissue map and slide with bytes flipped or cut off.

Each damaged copy goes to the command that reads it, in its own process under a memory limit and a time limit.
The contract: exit 0 (the damage did not matter, e.g. a flipped bit in a weight or a JPEG tile) or exit 1 with
one ``Error:`` line; never a traceback, never a hang, never a runaway allocation, and nothing half-written.
Mutations are drawn from a seeded generator, so every run tries the same copies.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from histo_daen.data.synthetic_dataset import write_synthetic_luad
from histo_daen.data.synthetic_slide import SyntheticSlide

pytestmark = pytest.mark.slow

MEMORY_LIMIT = 4 * 2**30  # address space of each command: a damaged length field must not allocate past it
TIME_LIMIT_S = 120  # far above a clean run (a few seconds): only a hang reaches it
N_COPIES = 6  # damaged copies per input file


def _mutations(data: bytes, seed: int) -> list[tuple[str, bytes]]:
    """Damaged copies of ``data``: bytes flipped in the head (headers), the tail (indexes) and anywhere; a cut."""
    rng = np.random.default_rng(seed)
    size = len(data)
    copies = [("cut in half", data[: size // 2]), ("last byte gone", data[:-1])]
    regions = {"head": (0, min(size, 4096)), "tail": (max(0, size - 4096), size), "anywhere": (0, size)}
    for index in range(N_COPIES):
        name = list(regions)[index % len(regions)]
        low, high = regions[name]
        damaged = bytearray(data)
        n_flips = int(rng.choice([1, 8, 64]))
        for position in rng.integers(low, high, size=n_flips):
            damaged[position] ^= int(rng.integers(1, 256))
        copies.append((f"{n_flips} byte(s) flipped in the {name}", bytes(damaged)))
    return copies


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _run_cli(*args: str | Path, cwd: Path, limit_memory: bool = True) -> subprocess.CompletedProcess[str]:
    # One malloc arena per thread reserves 64 MiB of address space each; two keep the limit about real memory.
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    return subprocess.run(
        [sys.executable, "-c", "from histo_daen.cli import main; main()", *map(str, args)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S,  # raises TimeoutExpired: a hang fails the test
        preexec_fn=_limit_memory if limit_memory else None,
    )


def _assert_clean(result: subprocess.CompletedProcess[str], what: str) -> None:
    assert "Traceback" not in result.stderr, f"{what}: traceback\n{result.stderr[-3000:]}"
    assert result.returncode in (0, 1), f"{what}: exit {result.returncode}\n{result.stderr[-3000:]}"
    if result.returncode == 1:
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, f"{what}: expected one Error line\n{result.stderr[-3000:]}"


def _no_temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".tmp-") or p.name.endswith(".partial")]


def test_damaged_checkpoints_are_refused_or_evaluated(segment_checkpoint: Path, tmp_path: Path) -> None:
    dataset = write_synthetic_luad(tmp_path / "LUAD", n_train=0, n_val=0, n_test=2, patch_size=64, workers=0).root
    original = segment_checkpoint.read_bytes()
    for number, (what, damaged) in enumerate(_mutations(original, seed=1)):
        checkpoint = tmp_path / f"damaged_{number}.pt"
        checkpoint.write_bytes(damaged)
        output = tmp_path / f"eval_{number}"
        result = _run_cli("evaluate", "--checkpoint", checkpoint, "--data-root", dataset, "-o", output, cwd=tmp_path)
        _assert_clean(result, f"checkpoint, {what}")
        assert output.is_dir() == (result.returncode == 0), what  # an evaluation folder exactly when it succeeded
    assert not _no_temporaries(tmp_path)


def test_damaged_maps_are_refused_or_exported(
    segment_checkpoint: Path, tiny_slide: SyntheticSlide, tmp_path: Path
) -> None:
    segmented = tmp_path / "maps"
    # Small chunks: many chunk files (glass ones included) for the damage to land in.
    result = _run_cli(
        "segment", tiny_slide.path, "--checkpoint", segment_checkpoint, "-o", segmented, "--workers", "0",
        "chunk_size=32", "geojson=false", "overview=false", cwd=tmp_path, limit_memory=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    original = segmented / "tiny" / "map.zarr"
    files = sorted(p for p in original.rglob("*") if p.is_file())
    rng = np.random.default_rng(2)
    for number in range(N_COPIES + 2):
        victim = files[int(rng.integers(0, len(files)))]
        what, damaged = _mutations(victim.read_bytes(), seed=number)[number % (N_COPIES + 2)]
        copy = tmp_path / f"damaged_{number}" / "map.zarr"
        shutil.copytree(original, copy)
        (copy / victim.relative_to(original)).write_bytes(damaged)
        target = copy.parent / "map.geojson"
        result = _run_cli("export", "geojson", copy, "-o", target, cwd=tmp_path)
        _assert_clean(result, f"map file {victim.relative_to(original)}, {what}")
        assert target.exists() == (result.returncode == 0), what  # never an empty GeoJSON after an error
    assert not _no_temporaries(tmp_path)


def test_damaged_slides_are_refused_or_tiled(tiny_slide: SyntheticSlide, tmp_path: Path) -> None:
    original = tiny_slide.path.read_bytes()
    for number, (what, damaged) in enumerate(_mutations(original, seed=3)):
        slide = tmp_path / f"damaged_{number}.svs"
        slide.write_bytes(damaged)
        output = tmp_path / f"tiles_{number}"
        result = _run_cli(
            "tile", slide, "-o", output, "--tile-size", "64", "--target-mpp", "2", "--workers", "0", cwd=tmp_path
        )
        _assert_clean(result, f"slide, {what}")
        complete = (output / f"damaged_{number}" / "manifest.csv").is_file()
        assert complete == (result.returncode == 0), what
    # A refused slide leaves at most an empty output folder: no half-written tiles anywhere.
    assert not [p for p in tmp_path.rglob("*.partial") if any(p.iterdir())]
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
