"""``histo-daen synth-slide`` and ``synth-dataset``: their bad-input contract (numbers, sizes beyond the machine).

Sizes that would need terabytes run in a child process under ``ulimit -v`` and ``ulimit -f`` (``run_limited``), so a
broken refusal fails there, never on the shared machine. Each case: the input, the one line the user sees, the exit
code, and what is on disk afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def test_synth_slide_of_ten_million_pixels_a_side_is_refused_with_its_estimate(
    run_limited: Callable[..., Any], tmp_path: Path, leftovers: Callable[[Path], list[Path]]
) -> None:
    outcome = run_limited("synth-slide", "-o", tmp_path / "huge.svs", "--size", "10000000x10000000")
    assert outcome.code == 1
    assert outcome.error.startswith(
        "Error: a 10000000x10000000 synthetic slide (one band of 256 rows) needs about 38.3 GiB of memory, more than "
        "this run may take ("
    )
    assert outcome.error.endswith("Choose a smaller --size.")
    assert not list(tmp_path.glob("huge*")) and not leftovers(tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mpp", "nan"], "Error: mpp must be a finite number of microns per pixel in [0.01, 1000], got nan"),
        (["--mpp", "inf"], "Error: mpp must be a finite number of microns per pixel in [0.01, 1000], got inf"),
    ],
)
def test_synth_slide_numbers_that_are_not_finite_are_refused(
    invoke: Callable[..., Any], tmp_path: Path, args: list[str], message: str
) -> None:
    outcome = invoke("synth-slide", "-o", tmp_path / "s.svs", "--size", "512x512", "--levels", "2", *args)
    assert outcome.code == 1
    assert outcome.error == message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mpp", "nan"], "Error: mpp must be a finite number of microns per pixel in [0.01, 1000], got nan"),
        (["--patch-size", "1000000"], "Error: patch_size must be in [32, 8192] pixels, got 1000000"),
    ],
)
def test_synth_dataset_numbers_that_are_not_finite_or_absurd_are_refused(
    invoke: Callable[..., Any], tmp_path: Path, args: list[str], message: str
) -> None:
    outcome = invoke("synth-dataset", "-o", tmp_path / "data", "--n-train", "2", *args)
    assert outcome.code == 1
    assert outcome.error == message
    assert list(tmp_path.iterdir()) == []


def test_synth_dataset_patches_too_big_for_memory_are_refused_with_the_estimate(
    run_limited: Callable[..., Any], tmp_path: Path
) -> None:
    # 8192 px patches: 12 GiB of renderer memory each, under ulimit -v 2 GiB.
    outcome = run_limited("synth-dataset", "-o", tmp_path / "data", "--n-train", "2", "--patch-size", "8192")
    assert outcome.code == 1
    assert outcome.error.startswith("Error: drawing 8192x8192-px patches in ")
    assert "needs about " in outcome.error and outcome.error.endswith("Choose a smaller --patch-size.")
    assert not (tmp_path / "data").exists() and not (tmp_path / "data.partial").exists()


@pytest.mark.parametrize("case", ["under_a_file", "unwritable", "a_folder", "exists"])
def test_synth_slide_output_that_cannot_be_used_is_one_error_and_changes_nothing(
    invoke: Callable[..., Any],
    bad_output: Callable[..., Any],
    disk_state: Callable[..., Any],
    tmp_path: Path,
    case: str,
) -> None:
    bad = bad_output(case, "slide.svs")
    before = disk_state(tmp_path)
    outcome = invoke("synth-slide", "-o", bad.path, "--size", "512x512", "--levels", "2")
    assert outcome.code == 1 and bad.words in outcome.error
    assert disk_state(tmp_path) == before


@pytest.mark.parametrize("case", ["under_a_file", "unwritable", "a_file", "not_empty"])
def test_synth_dataset_output_that_cannot_be_used_is_one_error_and_changes_nothing(
    invoke: Callable[..., Any],
    bad_output: Callable[..., Any],
    disk_state: Callable[..., Any],
    tmp_path: Path,
    case: str,
) -> None:
    bad = bad_output(case, "data")
    before = disk_state(tmp_path)
    outcome = invoke("synth-dataset", "-o", bad.path, "--n-train", "2", "--patch-size", "32")
    assert outcome.code == 1 and bad.words in outcome.error
    assert disk_state(tmp_path) == before
