"""``histo-daen tile``: its whole bad-input contract (numbers, resources, signals).

Missing, corrupt, blank and resolution-less slides are in ``test_tile.py``. Each case here: the input, the one line
the user sees, the exit code, and what is on disk afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from histo_daen.data.synthetic_slide import SyntheticSlide

FAST = ("--tile-size", "64", "--workers", "0")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--target-mpp", "nan", "target_mpp must be a finite number, got nan"),
        ("--target-mpp", "inf", "target_mpp must be a finite number, got inf"),
        ("--target-mpp", "0.0001", "target_mpp must be in [0.01, 1000] um/px, got 0.0001"),
        ("--slide-mpp", "inf", "slide_mpp must be a finite number, got inf"),
        ("--slide-mpp", "nan", "slide_mpp must be a finite number, got nan"),
    ],
)
def test_numbers_that_are_not_finite_or_absurd_are_refused_before_anything_is_written(
    invoke: Callable[..., Any], tiny_slide: SyntheticSlide, tmp_path: Path, option: str, value: str, message: str
) -> None:
    outcome = invoke("tile", tiny_slide.path, "-o", tmp_path / "out", option, value, *FAST)
    assert outcome.code == 1
    assert outcome.error == f"Error: options: {message}"
    assert not (tmp_path / "out").exists()


def test_a_grid_too_big_for_memory_is_refused_with_its_estimate(
    run_limited: Callable[..., Any], tiny_slide: SyntheticSlide, tmp_path: Path, leftovers: Callable[..., list[Path]]
) -> None:
    # 50x upsampling in 16-px tiles: 30 million grid positions (15 GiB), under ulimit -v 2 GiB.
    outcome = run_limited("tile", tiny_slide.path, "-o", tmp_path / "out", "--target-mpp", "0.01", "--tile-size", "16")
    assert outcome.code == 1
    line = outcome.error
    assert line.startswith("Error: tiny.svs: the grid of 6400 x 4800 = 30,720,000 tile positions")
    assert "needs about 14.6 GiB of memory, more than this run may take" in line
    assert "Raise --target-mpp or --tile-size" in line
    assert not leftovers(tmp_path) and not (tmp_path / "out" / "tiny").exists()


def test_more_workers_than_the_machine_can_run_are_refused_before_any_starts(
    invoke: Callable[..., Any], tiny_slide: SyntheticSlide, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("a worker pool was started")

    monkeypatch.setattr("histo_daen.tiling.extract.ProcessPoolExecutor", no_pool)
    outcome = invoke("tile", tiny_slide.path, "-o", tmp_path / "out", "--workers", "100000")
    assert outcome.code == 1
    line = outcome.error
    assert line.startswith("Error: --workers: 100000 worker processes are more than this machine can run (")
    assert "per core). Use " in line and " or fewer." in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["under_a_file", "unwritable", "a_file"])
def test_an_output_folder_that_cannot_be_used_is_one_error_and_changes_nothing(
    invoke: Callable[..., Any],
    bad_output: Callable[..., Any],
    disk_state: Callable[..., Any],
    tiny_slide: SyntheticSlide,
    tmp_path: Path,
    case: str,
) -> None:
    bad = bad_output(case, "tiles")
    before = disk_state(tmp_path)
    outcome = invoke("tile", tiny_slide.path, "-o", bad.path, *FAST)
    assert outcome.code == 1 and bad.words in outcome.error
    assert disk_state(tmp_path) == before


def _group_members(group: int) -> list[int]:
    """Live processes of a process group (the command, its forkserver, workers and resource tracker)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == group and state != "Z":
            members.append(int(entry.name))
    return members


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signal_number", "exit_code", "words"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")]
)
def test_a_signal_stops_every_worker_and_leaves_a_job_the_rerun_finishes(
    invoke: Callable[..., Any],
    pause_mid_job: Callable[..., subprocess.Popen[bytes]],
    tiny_slide: SyntheticSlide,
    tmp_path: Path,
    signal_number: int,
    exit_code: int,
    words: str,
) -> None:
    args = ["tile", str(tiny_slide.path), "--tile-size", "32", "--target-mpp", "0.5", "--workers", "2"]
    journal = tmp_path / "out" / "tiny.partial" / "progress.csv"

    def start() -> subprocess.Popen[bytes]:
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        with open(tmp_path / "stderr.txt", "w") as stderr:
            return subprocess.Popen(
                [sys.executable, "-c", "from histo_daen.cli import main; main()", *args, "-o", str(tmp_path / "out")],
                env={**os.environ, "OMP_NUM_THREADS": "1"},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # its own process group: Ctrl-C reaches the command and all its workers
            )

    child = pause_mid_job(
        start,
        started_enough=lambda: journal.exists() and journal.read_text().count("\n") >= 32,
        finished=lambda: (tmp_path / "out" / "tiny").exists(),
    )
    try:
        if signal_number == signal.SIGINT:
            os.killpg(child.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        else:
            child.send_signal(signal.SIGTERM)  # what kill, timeout and schedulers do: the command only
        os.killpg(child.pid, signal.SIGCONT)
        assert child.wait(timeout=60) == exit_code
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while _group_members(child.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group_members(child.pid) == []  # no orphaned forkserver, worker or resource tracker
    last_line = (tmp_path / "stderr.txt").read_text().splitlines()[-1]
    assert last_line.startswith(f"Interrupted by {words}: workers stopped; finished outputs are kept")
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()
    assert journal.exists() and not (tmp_path / "out" / "tiny").exists()

    resumed = invoke(*args, "-o", tmp_path / "out")
    assert resumed.code == 0, resumed.stderr
    assert " skipped (already present)" in resumed.stdout and ", 0 skipped" not in resumed.stdout
    assert invoke(*args, "-o", tmp_path / "fresh").code == 0
    manifest = (tmp_path / "out" / "tiny" / "manifest.csv").read_bytes()
    assert manifest == (tmp_path / "fresh" / "tiny" / "manifest.csv").read_bytes()
