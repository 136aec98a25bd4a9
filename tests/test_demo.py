"""The demo on a smaller synthetic slide: each step prints where its outputs are, and reruns reuse them."""

from __future__ import annotations

from pathlib import Path

import pytest

from histo_daen import demo


@pytest.mark.slow
def test_demo_writes_a_slide_and_tiles_it_then_reuses_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(demo.DEMO_SLIDE, "size_wh", (1536, 1024))
    lines: list[str] = []
    context = demo.run_demo(tmp_path, progress=False, workers=1, echo=lines.append)
    assert lines[0] == "[1/2] Write a synthetic whole-slide image"
    assert lines[2] == "[2/2] Find the tissue and tile it"
    assert lines[-1] == f"Demo outputs are in {tmp_path}/"
    assert (tmp_path / "slides" / "demo.svs").is_file()
    first = context.results["tiles"]
    assert first.n_written == first.n_tiles > 0
    assert (tmp_path / "tiles" / "demo" / "manifest.csv").is_file()

    again = demo.run_demo(tmp_path, progress=False, workers=1, echo=lambda line: None).results["tiles"]
    assert (again.n_written, again.n_skipped) == (0, first.n_tiles)


def test_module_entry_point_reports_errors_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "slides").write_text("a file where the demo wants a folder")
    assert demo.main(["--output", str(tmp_path), "--workers", "0"]) == 1
    assert capsys.readouterr().err.startswith("Error: ")
