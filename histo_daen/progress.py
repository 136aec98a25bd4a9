"""Progress bars, made in one place: a live bar on a terminal, a line every few seconds anywhere else.

On a terminal tqdm redraws its bar in place. Written to a file (a Slurm job's output, ``2> log.txt``, a pipe) those
redraws arrive ten times a second as carriage-return-separated text that fills the log; there
:func:`progress_bar` prints the same bar as one plain line every :data:`LINE_INTERVAL_S` seconds (and at the end).
``enabled=False`` (the CLI's ``-q/--quiet``, every torchrun rank but the first) shows nothing at all.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, Any, TypeVar

from tqdm.std import tqdm

__all__ = ["LINE_INTERVAL_S", "progress_bar"]

T = TypeVar("T")

LINE_INTERVAL_S = 10.0  # seconds between progress lines when stderr is not a terminal
_LINE_WIDTH = 100  # a fixed width: a file has no terminal width to follow


class _LineStream:
    """Turns tqdm's in-place redraws (``"\\r<bar>"``) into whole lines; drops the blank clearing writes."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        if line:
            self._stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable: Iterable[T] | None = None, *, enabled: bool, **options: Any) -> Any:
    """A tqdm bar on stderr (a terminal: live; otherwise a line every :data:`LINE_INTERVAL_S` s; disabled: nothing).

    Args:
        iterable: what to iterate over, as ``tqdm(iterable)``; None for a bar driven by ``update``.
        enabled: show progress at all (``progress and rank == 0``, ``False`` under ``--quiet``).
        **options: tqdm's own (``total``, ``unit``, ``desc``, ``initial``, ``leave``, ...).
    """
    if not enabled:
        return tqdm(iterable, disable=True, **options)
    stream = sys.stderr
    if _is_terminal(stream):
        return tqdm(iterable, file=stream, **options)
    options.pop("dynamic_ncols", None)
    return tqdm(
        iterable, file=_LineStream(stream), mininterval=LINE_INTERVAL_S, ncols=_LINE_WIDTH, ascii=True, **options
    )
