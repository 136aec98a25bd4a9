"""SIGTERM held back for the moments that must not be cut, then raised as Terminated."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from histo_daen.interrupts import Terminated, defer_if_held, interruptions_held


def _raise_unless_held(signum: int, frame: Any) -> None:
    if not defer_if_held():
        raise Terminated()


@pytest.fixture(autouse=True)
def _sigterm_handler() -> Iterator[None]:
    """A handler like the command line's (histo_daen.cli): raise Terminated, or defer it inside a held block."""
    previous = signal.signal(signal.SIGTERM, _raise_unless_held)
    yield
    signal.signal(signal.SIGTERM, previous)


def _sigterm_to_this_process() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # its Python handler runs before os.kill returns to the next line


def test_outside_a_held_block_sigterm_raises_at_once() -> None:
    with pytest.raises(Terminated):
        _sigterm_to_this_process()


def test_a_sigterm_inside_a_held_block_is_raised_when_the_block_ends() -> None:
    done = []
    with pytest.raises(Terminated), interruptions_held():
        _sigterm_to_this_process()
        done.append("rest of the block")
    assert done == ["rest of the block"]
    with interruptions_held():  # and only once
        pass


def test_nested_blocks_raise_at_the_outermost_end() -> None:
    done = []
    with pytest.raises(Terminated), interruptions_held():
        with interruptions_held():
            _sigterm_to_this_process()
        done.append("after the inner block")
    assert done == ["after the inner block"]


def test_an_error_ending_the_block_goes_on_unchanged_and_the_sigterm_is_not_raised_later() -> None:
    with pytest.raises(ValueError, match="the block's own error"), interruptions_held():
        _sigterm_to_this_process()
        raise ValueError("the block's own error")
    with interruptions_held():
        pass
