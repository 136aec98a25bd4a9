"""Machine-derived bounds: refusals name the setting, the estimate and the bound, before anything is allocated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from histo_daen.errors import ConfigError, ResourceLimitError
from histo_daen.resources import (
    PROCESS_BYTES,
    Machine,
    format_bytes,
    machine,
    require_disk,
    require_memory,
    require_workers,
)

SMALL = Machine(cores=2, memory_bytes=4 * 2**30, max_processes=None)


@pytest.mark.parametrize(
    ("n_bytes", "text"), [(0, "0 B"), (1536, "1.5 KiB"), (3 * 2**30, "3.0 GiB"), (2.5 * 2**40, "2.5 TiB")]
)
def test_format_bytes(n_bytes: float, text: str) -> None:
    assert format_bytes(n_bytes) == text


def test_workers_up_to_four_per_core_are_fine() -> None:
    for workers in (0, 1, 8):  # 8 = 4 per core on SMALL's 2 cores; one more is refused (next test)
        assert require_workers(workers, setting="--workers", host=SMALL) is None


def test_workers_beyond_four_per_core_are_refused_naming_the_bound() -> None:
    with pytest.raises(ResourceLimitError) as caught:
        require_workers(9, setting="--workers", host=SMALL)
    assert str(caught.value) == (
        "--workers: 9 worker processes are more than this machine can run (2 cores, 4.0 GiB available; at most 8: "
        "4 per core). Use 8 or fewer."
    )
    assert isinstance(caught.value, ConfigError)  # callers that handle bad settings handle this too


def test_worker_processes_are_bounded_by_memory_and_the_process_limit() -> None:
    tight = Machine(cores=64, memory_bytes=3 * PROCESS_BYTES, max_processes=None)
    with pytest.raises(ResourceLimitError, match=r"at most 3: 256\.0 MiB each in 768\.0 MiB\)\. Use 3 or fewer\.$"):
        require_workers(4, setting="data.workers", host=tight)
    limited = Machine(cores=64, memory_bytes=2**40, max_processes=10)
    with pytest.raises(ResourceLimitError, match=r"at most 5: ulimit -u 10\)"):
        require_workers(6, setting="data.workers", host=limited)
    require_workers(100, setting="threads", kind="threads", host=Machine(64, 2**40, max_processes=10))


def test_an_allocation_may_take_half_the_available_memory() -> None:
    require_memory(2 * 2**30, what="a grid", hint="Smaller.", host=SMALL)
    with pytest.raises(ResourceLimitError) as caught:
        require_memory(2 * 2**30 + 1, what="a grid", hint="Smaller.", host=SMALL)
    assert str(caught.value) == (
        "a grid needs about 2.0 GiB of memory, more than this run may take (2.0 GiB: half of the 4.0 GiB available). "
        "Smaller."
    )
    with pytest.raises(ResourceLimitError, match="needs about inf"):  # an overflowed estimate is refused too
        require_memory(float("inf"), what="x", hint="", host=SMALL)


def test_disk_estimates_are_checked_against_the_nearest_existing_folder(tmp_path: Path) -> None:
    require_disk(1024, tmp_path / "not" / "yet", what="tiles", hint="Fewer.")
    with pytest.raises(
        ResourceLimitError,
        match=rf"tiles needs about 1\.0 EiB of disk, more than the .* free in {tmp_path}\. Fewer\.$",
    ):
        require_disk(2.0**60, tmp_path / "not" / "yet", what="tiles", hint="Fewer.")


def test_the_machine_reflects_ulimit_v() -> None:
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30)); "
        "from histo_daen.resources import machine; print(machine().memory_bytes)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    available = int(result.stdout)
    assert 0 < available < 3 * 2**30  # the limit minus what the interpreter already maps
    assert machine().cores >= 1
