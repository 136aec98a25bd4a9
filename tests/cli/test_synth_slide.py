"""``histo-daen synth-slide``: a real slide and its ground truth, refusing to overwrite by accident."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from histo_daen.cli import cli

from histo_daen.slide import open_slide


def test_writes_a_slide_openslide_reads_as_aperio(tmp_path: Path) -> None:
    path = tmp_path / "demo.svs"
    result = CliRunner().invoke(cli, ["synth-slide", "-o", str(path), "--size", "1024x768", "--levels", "3"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{path}: 1024x768 px at 0.5 um/px, 3 levels; ground truth demo.mask.png")
    with open_slide(path, backend="openslide") as slide:
        assert slide.vendor == "aperio" and slide.level_count == 3 and slide.mpp == 0.5
    assert (tmp_path / "demo.mask.png").is_file() and (tmp_path / "demo.mask.json").is_file()


def test_no_mpp_tiff_has_no_resolution(tmp_path: Path) -> None:
    path = tmp_path / "plain.tiff"
    result = CliRunner().invoke(cli, ["synth-slide", "-o", str(path), "--size", "512x512", "--levels", "2", "--no-mpp"])
    assert result.exit_code == 0, result.output
    with open_slide(path) as slide:
        assert slide.vendor == "generic-tiff" and slide.mpp is None


def test_existing_file_needs_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "demo.svs"
    path.write_text("keep me")
    result = CliRunner().invoke(cli, ["synth-slide", "-o", str(path), "--size", "512x512"])
    assert result.exit_code == 1
    assert "Error: " in result.output and "demo.svs: already exists. Pass --overwrite" in result.output
    assert path.read_text() == "keep me"


def test_bad_size_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["synth-slide", "-o", str(tmp_path / "x.svs"), "--size", "big"])
    assert result.exit_code == 2 and "expected WIDTHxHEIGHT" in result.output
