"""tile_slide, one slide's folder: outputs, determinism, resume (also after SIGKILL/SIGINT), changes, bad input."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histo_daen.config.schema import TileConfig
from histo_daen.data.synthetic_slide import SyntheticSlide
from histo_daen.errors import NoTissueError, OutputExistsError, PathError
from histo_daen.tiling import tile_slide
from histo_daen.tiling.manifest import read_journal, read_manifest

from .conftest import copy_slide

SMALL = TileConfig(tile_size=64)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tile_slide_writes_tiles_manifest_and_pictures(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    result = tile_slide(small_slide.path, tmp_path / "small", SMALL, workers=2)
    folder = tmp_path / "small"
    assert result.output_dir == folder and result.manifest_path == folder / "manifest.csv"
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.yaml", "manifest.csv", "manifest.json", "thumbnail.png", "tiles", "tiles.png", "tissue_mask.png"
    ]  # fmt: skip
    rows = read_manifest(folder / "manifest.csv")
    assert result.n_tiles == result.n_written == len(rows) > 10 and result.n_skipped == 0
    assert sorted(p.name for p in (folder / "tiles").iterdir()) == sorted(Path(r["path"]).name for r in rows)
    for row in rows[:5]:
        tile = folder / row["path"]
        assert hashlib.sha256(tile.read_bytes()).hexdigest() == row["sha256"]
        assert np.asarray(Image.open(tile)).shape == (64, 64, 3)
        assert float(row["tissue_fraction"]) >= 0.5
        assert (int(row["width"]), int(row["height"])) == (128, 128)  # 64 px at 1 um/px from 0.5 um/px
    assert not list(tmp_path.glob("*.partial"))
    assert result.tissue_area_mm2 == pytest.approx(np.pi * (0.3 * 768 * 0.5e-3) ** 2, rel=0.1)  # the disc


def test_tiles_are_made_durable_file_by_file_not_by_syncing_every_filesystem(
    small_slide: SyntheticSlide, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import histo_daen.tiling.folder as folder_module

    def sync_everything() -> None:
        raise AssertionError("os.sync() flushes every filesystem")

    seen_files: list[Path] = []
    seen_folders: list[Path] = []
    make_durable = folder_module.make_durable

    def recording(files: Iterable[Path], *, folders: Iterable[Path] = ()) -> None:
        files, folders = list(files), list(folders)
        seen_files.extend(files)
        seen_folders.extend(folders)
        make_durable(files, folders=folders)

    monkeypatch.setattr(os, "sync", sync_everything)
    monkeypatch.setattr(folder_module, "make_durable", recording)
    result = tile_slide(small_slide.path, tmp_path / "small", SMALL, workers=0)
    rows = read_manifest(result.manifest_path)
    # Every tile the manifest lists was fsynced (under the .partial folder it had then), then the folders.
    assert sorted(p.name for p in seen_files) == sorted(Path(row["path"]).name for row in rows)
    assert {p.name for p in seen_folders} >= {"tiles", "small.partial", tmp_path.name}


@pytest.mark.slow
def test_tiling_twice_gives_byte_identical_outputs(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    tile_slide(small_slide.path, tmp_path / "a" / "small", SMALL, workers=2)
    tile_slide(small_slide.path, tmp_path / "b" / "small", SMALL, workers=0)
    assert _files(tmp_path / "a" / "small") == _files(tmp_path / "b" / "small")


def test_rerun_with_equal_settings_skips_every_verified_tile(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    first = tile_slide(small_slide.path, tmp_path / "small", SMALL, workers=0)
    before = _files(tmp_path / "small")
    again = tile_slide(small_slide.path, tmp_path / "small", SMALL, workers=0)
    assert (again.n_written, again.n_skipped) == (0, first.n_tiles)
    assert _files(tmp_path / "small") == before


def test_rerun_rewrites_a_damaged_tile(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    tile_slide(small_slide.path, tmp_path / "small", SMALL, workers=0)
    before = _files(tmp_path / "small")
    damaged = tmp_path / "small" / read_manifest(tmp_path / "small" / "manifest.csv")[3]["path"]
    damaged.write_bytes(damaged.read_bytes()[:100])
    again = tile_slide(small_slide.path, tmp_path / "small", SMALL, workers=0)
    assert again.n_written == 1
    assert _files(tmp_path / "small") == before


def test_resume_removes_what_a_killed_job_left_half_written(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    tile_slide(small_slide.path, tmp_path / "done" / "small", SMALL, workers=0)
    expected = _files(tmp_path / "done" / "small")
    # A job killed while its pictures (drawn beside the tiles) and a tile were being written.
    partial = tmp_path / "killed" / "small.partial"
    partial.mkdir(parents=True)
    (partial / "manifest.json").write_bytes(expected["manifest.json"])
    (partial / "tiles").mkdir()
    (partial / ".tmp-tiles.png.k1ll3d").write_bytes(b"\x89PNG half")
    (partial / "tiles" / ".tmp-a-tile.png.k1ll3d").write_bytes(b"\x89PNG half")
    resumed = tile_slide(small_slide.path, tmp_path / "killed" / "small", SMALL, workers=0)
    assert resumed.n_written == resumed.n_tiles
    assert _files(tmp_path / "killed" / "small") == expected


def test_other_settings_stop_and_name_what_changed(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    tile_slide(small_slide.path, tmp_path / "small", SMALL, workers=0)
    with pytest.raises(
        OutputExistsError,
        match=r"small: was tiled from another slide or with other settings \(parameters\.tile_size: stored 64, "
        r"requested 96\).*--overwrite",
    ):
        tile_slide(small_slide.path, tmp_path / "small", TileConfig(tile_size=96), workers=0)


def test_overwrite_replaces_an_output_made_with_other_settings(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    tile_slide(small_slide.path, tmp_path / "small", SMALL, workers=0)
    result = tile_slide(
        small_slide.path, tmp_path / "small", TileConfig(tile_size=96, format="jpeg"), workers=0, overwrite=True
    )
    names = [p.name for p in (tmp_path / "small" / "tiles").iterdir()]
    assert len(names) == result.n_tiles and all(name.endswith(".jpg") for name in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small"]  # no .partial or .old folder left


def test_foreign_folder_in_the_way_is_not_replaced(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"small: exists but is not a complete histo-daen tiling output"):
        tile_slide(small_slide.path, tmp_path / "small", SMALL, workers=0)
    assert (tmp_path / "small" / "notes.txt").read_text() == "mine"


def test_blank_slide_reports_no_tissue_and_writes_nothing(blank_slide: Path, tmp_path: Path) -> None:
    with pytest.raises(NoTissueError, match=r"blank\.svs: no tissue found"):
        tile_slide(blank_slide, tmp_path / "out" / "blank", SMALL, workers=0)
    assert not (tmp_path / "out").exists()


def test_tissue_without_a_full_enough_tile_says_what_to_lower(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    with pytest.raises(NoTissueError, match=r"small\.svs: has 0\.\d+ mm² of tissue, but no 300-px tile .*--min-tissue"):
        tile_slide(small_slide.path, tmp_path / "small", TileConfig(tile_size=300, min_tissue=1.0), workers=0)


def test_output_that_is_a_file_is_refused(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    (tmp_path / "out").write_text("")
    with pytest.raises(PathError, match=r"out: is a file, not a folder"):
        tile_slide(small_slide.path, tmp_path / "out" / "small", SMALL)
    with pytest.raises(PathError, match=r"out/sub: cannot be created: .*out is a file"):
        tile_slide(small_slide.path, tmp_path / "out" / "sub" / "small", SMALL)


def test_unicode_slide_name(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    slide = copy_slide(small_slide, tmp_path / "in", "Lunge_ü_肺腺癌.svs")
    result = tile_slide(slide, tmp_path / "out" / "lunge", SMALL, workers=0)
    (first, *_) = read_manifest(result.manifest_path)
    assert first["slide"] == "Lunge_ü_肺腺癌.svs" and Path(first["path"]).name.startswith("Lunge_ü_肺腺癌_x")


def test_a_rewritten_slide_is_not_mistaken_for_the_tiled_one(
    small_slide: SyntheticSlide, tiny_slide: SyntheticSlide, tmp_path: Path
) -> None:
    slide = copy_slide(small_slide, tmp_path / "in", "case.svs")
    tile_slide(slide, tmp_path / "out" / "case", SMALL, workers=0)
    slide.write_bytes(tiny_slide.path.read_bytes())  # another scan saved under the same name
    with pytest.raises(
        OutputExistsError, match=r"case: was tiled from another slide .*slide\.(dimensions|header_sha256)"
    ):
        tile_slide(slide, tmp_path / "out" / "case", SMALL, workers=0)


# -- killed jobs -----------------------------------------------------------------------------------------------------


def _tile_in_subprocess(slide: Path, output: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", "from histo_daen.cli import main; main()", "tile", str(slide), "-o", str(output),
               "--tile-size", "32", "--target-mpp", "0.5", "--workers", "1"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.slow
@pytest.mark.parametrize("kill_signal", [signal.SIGKILL, signal.SIGINT])
def test_killed_job_resumes_to_the_same_bytes_as_an_uninterrupted_one(
    pause_mid_job: Callable[..., subprocess.Popen[bytes]],
    tiny_slide: SyntheticSlide,
    tmp_path: Path,
    kill_signal: signal.Signals,
) -> None:
    config = TileConfig(tile_size=32, target_mpp=0.5)
    killed = tmp_path / "killed"
    journal = killed / "tiny.partial" / "progress.csv"

    def start() -> subprocess.Popen[bytes]:
        shutil.rmtree(killed, ignore_errors=True)
        return _tile_in_subprocess(tiny_slide.path, killed)

    process = pause_mid_job(
        start, started_enough=lambda: len(read_journal(journal)) >= 64, finished=lambda: (killed / "tiny").exists()
    )
    os.killpg(process.pid, kill_signal)  # the command and its workers, as Ctrl-C or an out-of-memory kill would
    os.killpg(process.pid, signal.SIGCONT)
    process.wait(timeout=60)
    assert not (killed / "tiny").exists(), "the job finished although it was interrupted"
    done_before = len(read_journal(journal))
    assert done_before >= 64

    resumed = tile_slide(tiny_slide.path, killed / "tiny", config, workers=2)
    assert resumed.n_skipped >= done_before and resumed.n_written == resumed.n_tiles - resumed.n_skipped > 0
    uninterrupted = tmp_path / "uninterrupted"
    tile_slide(tiny_slide.path, uninterrupted / "tiny", config, workers=2)
    assert _files(killed / "tiny") == _files(uninterrupted / "tiny")
    assert not list(killed.glob("*.partial"))
