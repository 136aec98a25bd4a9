"""What this machine can give a run (cores, memory, disk, processes), and refusals with the estimate before a
run asks for more.

Config values are checked for being finite and in a sane range by the config schema, which is the same on every
machine (a config written on a 64-core node stays a valid config on a laptop). Whether *this* machine can run it
is decided here, right before the resource is taken: a number of worker processes or threads, or an allocation
whose size follows from the inputs (a tile grid, a thumbnail, a synthetic slide). Every refusal is a
:class:`~histo_daen.errors.ResourceLimitError` naming the setting, the estimate and the bound, raised before
anything is allocated or started.

The bounds are deliberately loose (they refuse what cannot work or would starve the machine, never what is merely
slow): worker processes up to :data:`WORKERS_PER_CORE` per usable core and what the available memory holds at
:data:`PROCESS_BYTES` each; one allocation up to :data:`MEMORY_SHARE` of the available memory; disk writes up to
the free space of the target's file system.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
from dataclasses import dataclass
from pathlib import Path

from histo_daen.errors import ResourceLimitError

__all__ = [
    "MEMORY_SHARE",
    "PROCESS_BYTES",
    "THREAD_BYTES",
    "WORKERS_PER_CORE",
    "Machine",
    "format_bytes",
    "machine",
    "require_disk",
    "require_memory",
    "require_workers",
    "usable_cores",
]

# Workers beyond a few per core only queue for the same cores; data loading and tile reading hide I/O waits with 2-4.
WORKERS_PER_CORE = 4
# Resident memory a worker process adds (a forked data loader with torch, a forkserver slide reader), rounded up.
PROCESS_BYTES = 256 * 2**20
# A reader thread: its own slide handle (OpenSlide's tile cache) and a few tiles in flight.
THREAD_BYTES = 64 * 2**20
# One estimated allocation may take this share of the available memory; the rest is for the job's other arrays
# and for the machine's other users.
MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class Machine:
    """What this process may use now.

    Attributes:
        cores: CPU cores in its affinity mask (Slurm and taskset limits count).
        memory_bytes: memory it can still allocate: the least of the system's available memory, the cgroup's
            remaining limit and the address-space limit (``ulimit -v``) minus what the process already maps.
        max_processes: the per-user process limit (``ulimit -u``), or None when unlimited.
    """

    cores: int
    memory_bytes: int
    max_processes: int | None

    def describe(self) -> str:
        """``"2 cores, 21.7 GiB available"``: the facts a refusal is based on."""
        cores = f"{self.cores} core{'s' if self.cores != 1 else ''}"
        return f"{cores}, {format_bytes(self.memory_bytes)} available"


def format_bytes(n_bytes: float) -> str:
    """``1536`` -> ``"1.5 KiB"``; powers of 1024, one decimal, up to EiB."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} EiB"


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS and Windows have no affinity call
        return max(1, os.cpu_count() or 1)


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup files say "max" when unlimited


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _mapped_bytes() -> int:
    """The address space this process maps already (``VmSize``), which ``ulimit -v`` counts."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def _available_memory() -> int:
    candidates = []
    available = _meminfo_available()
    if available is not None:
        candidates.append(available)
    limit = _read_int("/sys/fs/cgroup/memory.max")
    used = _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        candidates.append(max(0, limit - used))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        candidates.append(max(0, soft - _mapped_bytes()))
    if not candidates:  # pragma: no cover - no /proc: trust the physical size
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(candidates)


def machine() -> Machine:
    """What this process may use now (read fresh on each call: other users come and go)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    max_processes = None if soft == resource.RLIM_INFINITY else int(soft)
    return Machine(cores=usable_cores(), memory_bytes=_available_memory(), max_processes=max_processes)


def require_workers(
    n_workers: int, *, setting: str, kind: str = "processes", hint: str = "", host: Machine | None = None
) -> None:
    """Refuse a worker count this machine cannot run, before any worker starts.

    Args:
        n_workers: the requested processes or threads.
        setting: the option or config key that asked for them, e.g. ``"--workers (data.workers)"``.
        kind: ``"processes"`` (:data:`PROCESS_BYTES` each, counted against ``ulimit -u``) or ``"threads"``
            (:data:`THREAD_BYTES` each).
        hint: what to do instead; default: name the largest count that fits.
        host: the machine (default: :func:`machine`).

    Raises:
        ResourceLimitError: more than :data:`WORKERS_PER_CORE` per core, more than the available memory holds,
            or (processes) more than the per-user process limit.
    """
    if n_workers <= 0:
        return
    host = host or machine()
    per_worker = PROCESS_BYTES if kind == "processes" else THREAD_BYTES
    bounds = {
        f"{WORKERS_PER_CORE} per core": WORKERS_PER_CORE * host.cores,
        f"{format_bytes(per_worker)} each in {format_bytes(host.memory_bytes)}": host.memory_bytes // per_worker,
    }
    if kind == "processes" and host.max_processes is not None:
        bounds[f"ulimit -u {host.max_processes}"] = host.max_processes // 2  # the user's other processes count too
    reason, bound = min(bounds.items(), key=lambda item: item[1])
    bound = max(bound, 0)
    if n_workers <= bound:
        return
    advice = hint or (f"Use {bound} or fewer." if bound > 0 else "Use 0 (work in this process).")
    raise ResourceLimitError(
        f"{setting}: {n_workers} worker {kind} are more than this machine can run ({host.describe()}; at most "
        f"{bound}: {reason}). {advice}"
    )


def require_memory(n_bytes: float, *, what: str, hint: str, host: Machine | None = None) -> None:
    """Refuse an allocation estimated at ``n_bytes`` that exceeds :data:`MEMORY_SHARE` of the available memory.

    Args:
        n_bytes: the estimate (may be astronomically large; it is never allocated here).
        what: what would be allocated and why, e.g. ``"the tile grid of s.svs at 0.0001 um/px (6.2e9 cells)"``.
        hint: what to change.

    Raises:
        ResourceLimitError: with the estimate, the available memory and the hint.
    """
    host = host or machine()
    budget = MEMORY_SHARE * host.memory_bytes
    if math.isfinite(n_bytes) and n_bytes <= budget:
        return
    raise ResourceLimitError(
        f"{what} needs about {format_bytes(n_bytes)} of memory, more than this run may take "
        f"({format_bytes(budget)}: half of the {format_bytes(host.memory_bytes)} available). {hint}"
    )


def require_disk(n_bytes: float, folder: str | os.PathLike[str], *, what: str, hint: str) -> None:
    """Refuse writing an estimated ``n_bytes`` into ``folder`` (or its nearest existing parent) when it has less free.

    Raises:
        ResourceLimitError: with the estimate, the free space and the hint.
    """
    place = Path(folder).absolute()
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        free = shutil.disk_usage(place).free
    except OSError:  # an unreadable place: the write itself will say what is wrong
        return
    if math.isfinite(n_bytes) and n_bytes <= free:
        return
    raise ResourceLimitError(
        f"{what} needs about {format_bytes(n_bytes)} of disk, more than the {format_bytes(free)} free in {place}. "
        f"{hint}"
    )
