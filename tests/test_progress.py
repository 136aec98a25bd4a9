"""Progress: a live bar on a terminal, plain lines every few seconds in a log, nothing when disabled."""

from __future__ import annotations

import io
import sys

import pytest

from histo_daen.progress import LINE_INTERVAL_S, progress_bar


class _Log(io.StringIO):
    """A log file: not a terminal."""

    def isatty(self) -> bool:
        return False


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_progress_is_whole_lines_not_redraws(monkeypatch: pytest.MonkeyPatch) -> None:
    log = _Log()
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress_bar(range(5000), enabled=True, unit="tile", desc="slide.svs"):
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # The first line and the last; in between one per LINE_INTERVAL_S, and this loop takes far less than that.
    assert 2 <= len(lines) <= 3, lines
    assert lines[0].startswith("slide.svs:   0%|") and "0/5000" in lines[0]
    assert lines[-1].startswith("slide.svs: 100%|") and "5000/5000" in lines[-1]
    assert LINE_INTERVAL_S >= 5


def test_on_a_terminal_the_bar_redraws_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    for _ in progress_bar(range(3), enabled=True, mininterval=0):
        pass
    assert terminal.getvalue().count("\r") >= 3


def test_disabled_progress_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    log = _Log()
    monkeypatch.setattr(sys, "stderr", log)
    with progress_bar(total=10, enabled=False) as bar:
        bar.update(10)
    assert log.getvalue() == ""
