"""SIGTERM as an exception, and the few moments it must wait for.

The command line turns SIGTERM (``kill``, ``timeout``, a scheduler's stop or time limit) into :class:`Terminated`,
raised in the main thread like Ctrl-C, so a command unwinds through the same clean-up either way. Some moments must
not be cut by it: while a data loader forks its workers (a child forked then would run this process's handler, and
logging's at-fork hooks in the parent would raise it where nothing catches it) and while it shuts them down (an
exception raised inside a finaliser is printed as "Exception ignored" and lost). Such code runs inside
:func:`interruptions_held`; a SIGTERM that arrives there is raised when the block ends.

Sent to the whole process group, as ``timeout`` and schedulers do, SIGTERM reaches the workers too; torch's worker
handler makes them exit, and the command reports one interruption, not the workers' deaths.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Terminated", "defer_if_held", "interruptions_held"]


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, ``kill``, ``timeout``), raised in the main thread like Ctrl-C.

    Being a KeyboardInterrupt, it unwinds through exactly the clean-up Ctrl-C runs: worker pools shut down (no
    orphaned forkserver or reader), temporary files are removed, and partial outputs stay resumable.
    """


_depth = 0  # nesting of interruptions_held blocks in this process
_deferred = False  # a SIGTERM arrived inside one


def defer_if_held() -> bool:
    """For the SIGTERM handler: True (and the signal is remembered) if it arrived inside :func:`interruptions_held`,
    so the handler returns instead of raising."""
    global _deferred
    if _depth > 0:
        _deferred = True
        return True
    return False


@contextmanager
def interruptions_held() -> Iterator[None]:
    """``with interruptions_held():``: a SIGTERM arriving inside the block is raised as :class:`Terminated` when it
    ends.

    If the block ends by an exception, that exception goes on unchanged (the command line still reports the
    interruption: its handler records every SIGTERM). Blocks nest; the outermost raises.
    """
    global _depth, _deferred
    _depth += 1
    try:
        yield
    except BaseException:
        _depth -= 1
        if _depth == 0:
            _deferred = False
        raise
    _depth -= 1
    if _depth == 0 and _deferred:
        _deferred = False
        raise Terminated()
