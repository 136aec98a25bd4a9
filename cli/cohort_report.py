"""How cohort commands (``tile``, ``segment``) report: an ``Error:`` line per failed input, then the exit code.

Exit codes: 0 every input done; 1 the one input given failed (its error is the whole story); 3 some of several
inputs failed (each on its own ``Error:`` line on stderr, the others finished).
"""

from __future__ import annotations

import sys
from typing import Any

from histo_daen.cli import EXIT_SOME_FAILED

__all__ = ["echo_failure", "echo_line", "exit_for", "shard_text"]


def echo_line(text: str, *, err: bool = False) -> None:
    """A line printed while progress bars may be on screen: the bars are cleared first and redrawn after it."""
    from tqdm.auto import tqdm

    tqdm.write(text, file=sys.stderr if err else sys.stdout)


def echo_failure(outcome: Any) -> None:
    """One ``Error:`` line on stderr for a failed input (a ``SlideOutcome`` with status "failed")."""
    echo_line(f"Error: {outcome.error}", err=True)


def shard_text(report: Any) -> str:
    """``" (shard 2/4)"`` when the report covers one shard, else ``""``."""
    return f" (shard {report.shard})" if report.shard is not None else ""


def exit_for(report: Any) -> None:
    """Leave with the cohort exit code (module docstring) when inputs failed; return when none did."""
    if not report.failed:
        return
    raise SystemExit(1 if len(report.outcomes) == 1 else EXIT_SOME_FAILED)
