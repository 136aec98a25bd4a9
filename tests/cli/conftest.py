"""Helpers for the command-line tests: run a command in this process, or in a child process under hard limits.

The ``test_bad_input_<command>.py`` modules use them to pin each command's bad-input contract: the input, the one
line the user sees, the exit code, and what is on disk afterwards.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from histo_daen.cli import cli


@dataclass(frozen=True)
class Outcome:
    """What a command printed and returned."""

    code: int
    stdout: str
    stderr: str

    @property
    def errors(self) -> list[str]:
        """The ``Error: ...`` lines on stderr."""
        return [line for line in self.stderr.splitlines() if line.startswith("Error: ")]

    @property
    def error(self) -> str:
        """The one ``Error:`` line (fails the test when there is not exactly one)."""
        assert len(self.errors) == 1, f"expected one Error line, got:\n{self.stderr}"
        return self.errors[0]


def _checked(code: int, stdout: str, stderr: str) -> Outcome:
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr
    return Outcome(code, stdout, stderr)


@pytest.fixture
def invoke() -> Callable[..., Outcome]:
    """``invoke("tile", slide, "-o", out)``: the command in this process (click's runner); never a traceback."""

    def run(*args: str | os.PathLike[str]) -> Outcome:
        result = CliRunner().invoke(cli, [str(arg) for arg in args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # an exception the CLI did not turn into one Error line: a bug, shown as such
        return _checked(result.exit_code, result.stdout, result.stderr)

    return run


LIMITED_MEMORY = 2 * 2**30  # address space (ulimit -v) of a limited child: a runaway allocation fails inside it
LIMITED_FILE_SIZE = 256 * 2**20  # largest file a limited child may write (ulimit -f)


def _apply_limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMITED_MEMORY, LIMITED_MEMORY))
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMITED_FILE_SIZE, LIMITED_FILE_SIZE))


@pytest.fixture
def run_limited(tmp_path: Path) -> Callable[..., Outcome]:
    """``run_limited("synth-slide", ...)``: the command in a child process with ``ulimit -v 2 GiB``, ``ulimit -f
    256 MiB`` and a 120 s timeout, so an input that asks for too much fails there, never on the shared machine."""

    def run(*args: str | os.PathLike[str], timeout: float = 120) -> Outcome:
        # One malloc arena per thread reserves 64 MiB of address space each; two keep the limit about real memory.
        environment = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
        result = subprocess.run(
            [sys.executable, "-c", "from histo_daen.cli import main; main()", *map(str, args)],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_apply_limits,
        )
        return _checked(result.returncode, result.stdout, result.stderr)

    return run


def _leftovers(folder: Path) -> list[Path]:
    return [
        path
        for path in folder.rglob("*")
        if path.name.startswith((".tmp-", ".synthetic-")) or path.name.endswith(".partial")
    ]


@pytest.fixture
def leftovers() -> Callable[[Path], list[Path]]:
    """``leftovers(folder)``: half-written things under it (atomic-write temporaries, scratch, ``.partial``)."""
    return _leftovers


UNWRITABLE = Path("/sys/histo-daen-test")  # sysfs refuses new files even to root (chmod would not stop root)


@dataclass(frozen=True)
class BadOutput:
    """An output a command cannot use, and the words its one ``Error:`` line must hold."""

    path: Path
    words: str


@pytest.fixture
def bad_output(tmp_path: Path) -> Callable[[str, str], BadOutput]:
    """``bad_output(case, name)``: an output path ``name`` placed so that it cannot be used.

    Cases: ``under_a_file`` (part of the way is a regular file), ``unwritable`` (a place no one may write),
    ``a_file`` (a folder output that is a file), ``a_folder`` (a file output that is a folder), ``not_empty`` (a
    folder with something in it), ``exists`` (a file that is there already).
    """

    def make(case: str, name: str) -> BadOutput:
        if case == "under_a_file":
            (tmp_path / "file").write_text("a regular file")
            return BadOutput(tmp_path / "file" / name, f"cannot be created: {tmp_path / 'file'} is a file")
        if case == "unwritable":
            if not Path("/sys").is_dir() or _writable("/sys"):
                pytest.skip("no unwritable place on this machine (/sys accepts files)")
            return BadOutput(UNWRITABLE / name, "cannot be written (in /sys): ")
        if case == "a_file":
            (tmp_path / name).write_text("a regular file")
            return BadOutput(tmp_path / name, f"{tmp_path / name}: is a file, not a folder")
        if case == "a_folder":
            (tmp_path / name).mkdir()
            return BadOutput(tmp_path / name, f"{tmp_path / name}: is a folder, not a file")
        if case == "not_empty":
            (tmp_path / name).mkdir()
            (tmp_path / name / "notes.txt").write_text("mine")
            return BadOutput(tmp_path / name, f"{tmp_path / name}: exists and is not empty. Pass --overwrite")
        if case == "exists":
            (tmp_path / name).write_text("mine")
            return BadOutput(tmp_path / name, f"{tmp_path / name}: already exists. Pass --overwrite")
        raise ValueError(case)

    return make


def _writable(folder: str) -> bool:
    try:
        with open(os.path.join(folder, ".histo-daen-probe"), "w"):
            pass
    except OSError:
        return False
    os.unlink(os.path.join(folder, ".histo-daen-probe"))
    return True


@pytest.fixture
def disk_state() -> Callable[[Path], dict[str, bytes | None]]:
    """``disk_state(folder)``: every path under ``folder`` with its bytes (None for folders), to compare a before
    and an after: a refused command changes nothing."""

    def state(folder: Path) -> dict[str, bytes | None]:
        return {
            str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes()
            for path in sorted(folder.rglob("*"))
        }

    return state
