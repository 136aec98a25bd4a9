"""tile_slide / tile_slides: outputs, determinism, resume (also after SIGKILL/SIGINT), settings changes, bad input."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histo_daen.cohort import Shard
from histo_daen.config.schema import TileConfig
from histo_daen.data.synthetic_slide import SyntheticSlide
from histo_daen.errors import NoTissueError, OutputExistsError, PathError
from histo_daen.tiling import SlideFailure, SlideTilingResult, tile_slide, tile_slides
from histo_daen.tiling.manifest import read_journal, read_manifest

from .conftest import copy_slide

SMALL = TileConfig(tile_size=64)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_tile_slide_writes_tiles_manifest_and_pictures(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    result = tile_slide(small_slide.path, tmp_path, SMALL, workers=2)
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


@pytest.mark.slow
def test_tiling_twice_gives_byte_identical_outputs(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    tile_slide(small_slide.path, tmp_path / "a", SMALL, workers=2)
    tile_slide(small_slide.path, tmp_path / "b", SMALL, workers=0)
    assert _files(tmp_path / "a" / "small") == _files(tmp_path / "b" / "small")


def test_rerun_with_equal_settings_skips_every_verified_tile(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    first = tile_slide(small_slide.path, tmp_path, SMALL, workers=0)
    before = _files(tmp_path / "small")
    again = tile_slide(small_slide.path, tmp_path, SMALL, workers=0)
    assert (again.n_written, again.n_skipped) == (0, first.n_tiles)
    assert _files(tmp_path / "small") == before


def test_rerun_rewrites_a_damaged_tile(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    tile_slide(small_slide.path, tmp_path, SMALL, workers=0)
    before = _files(tmp_path / "small")
    damaged = tmp_path / "small" / read_manifest(tmp_path / "small" / "manifest.csv")[3]["path"]
    damaged.write_bytes(damaged.read_bytes()[:100])
    again = tile_slide(small_slide.path, tmp_path, SMALL, workers=0)
    assert again.n_written == 1
    assert _files(tmp_path / "small") == before


def test_other_settings_stop_and_name_what_changed(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    tile_slide(small_slide.path, tmp_path, SMALL, workers=0)
    with pytest.raises(
        OutputExistsError, match=r"small: was tiled with other settings \(tile_size 64 -> 96\).*--overwrite"
    ):
        tile_slide(small_slide.path, tmp_path, TileConfig(tile_size=96), workers=0)


def test_overwrite_replaces_an_output_made_with_other_settings(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    tile_slide(small_slide.path, tmp_path, SMALL, workers=0)
    result = tile_slide(small_slide.path, tmp_path, TileConfig(tile_size=96, format="jpeg"), workers=0, overwrite=True)
    names = [p.name for p in (tmp_path / "small" / "tiles").iterdir()]
    assert len(names) == result.n_tiles and all(name.endswith(".jpg") for name in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small"]  # no .partial or .old folder left


def test_foreign_folder_in_the_way_is_not_replaced(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"small: exists but is not a complete histo-daen tiling output"):
        tile_slide(small_slide.path, tmp_path, SMALL, workers=0)
    assert (tmp_path / "small" / "notes.txt").read_text() == "mine"


def test_blank_slide_reports_no_tissue_and_writes_nothing(blank_slide: Path, tmp_path: Path) -> None:
    with pytest.raises(NoTissueError, match=r"blank\.svs: no tissue found"):
        tile_slide(blank_slide, tmp_path / "out", SMALL, workers=0)
    assert not (tmp_path / "out").exists()


def test_tissue_without_a_full_enough_tile_says_what_to_lower(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    with pytest.raises(NoTissueError, match=r"small\.svs: has 0\.\d+ mm² of tissue, but no 300-px tile .*--min-tissue"):
        tile_slide(small_slide.path, tmp_path, TileConfig(tile_size=300, min_tissue=1.0), workers=0)


def test_output_that_is_a_file_is_refused(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    (tmp_path / "out").write_text("")
    with pytest.raises(PathError, match=r"out: is a file, not a folder"):
        tile_slide(small_slide.path, tmp_path / "out", SMALL)
    with pytest.raises(PathError, match=r"out/sub: cannot be created: part of the path is a file"):
        tile_slide(small_slide.path, tmp_path / "out" / "sub", SMALL)


def test_unicode_slide_name(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    slide = copy_slide(small_slide, tmp_path / "in", "Lunge_ü_肺腺癌.svs")
    result = tile_slide(slide, tmp_path / "out", SMALL, workers=0)
    assert result.output_dir.name == "Lunge_ü_肺腺癌"
    assert read_manifest(result.manifest_path)[0]["slide"] == "Lunge_ü_肺腺癌.svs"


def test_cohort_reports_bad_slides_and_finishes_the_others(
    small_slide: SyntheticSlide, not_a_slide: Path, truncated_slide: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    copy_slide(small_slide, inputs)
    (inputs / "notes.svs").write_bytes(not_a_slide.read_bytes())
    (inputs / "truncated.svs").write_bytes(truncated_slide.read_bytes())
    (inputs / "small.mask.png").write_bytes(b"not a slide name: skipped in folders")
    seen: list[SlideTilingResult | SlideFailure] = []
    result = tile_slides([inputs, tmp_path / "missing.svs"], tmp_path / "out", SMALL, workers=0, report=seen.append)
    assert [r.slide_path.name for r in result.results] == ["small.svs"]
    messages = {failure.path.name: str(failure.error) for failure in result.failures}
    assert sorted(messages) == ["missing.svs", "notes.svs", "truncated.svs"]
    assert "missing.svs: does not exist" in messages["missing.svs"]
    assert "notes.svs: is not a slide OpenSlide or tiffslide can open" in messages["notes.svs"]
    assert "truncated.svs: cannot be decoded" in messages["truncated.svs"]
    assert len(seen) == 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["small"]


@pytest.mark.slow
def test_shards_split_the_cohort(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    for name in ("a.svs", "b.svs", "c.svs"):
        copy_slide(small_slide, tmp_path / "in", name)
    first = tile_slides([tmp_path / "in"], tmp_path / "out", SMALL, workers=0, shard=Shard(0, 2))
    second = tile_slides([tmp_path / "in"], tmp_path / "out", SMALL, workers=0, shard=Shard(1, 2))
    assert [r.slide_path.name for r in first.results] == ["a.svs", "c.svs"]
    assert [r.slide_path.name for r in second.results] == ["b.svs"]


def test_two_slides_with_one_name_do_not_overwrite_each_other(small_slide: SyntheticSlide, tmp_path: Path) -> None:
    one = copy_slide(small_slide, tmp_path / "x")
    two = copy_slide(small_slide, tmp_path / "y")
    result = tile_slides([one, two], tmp_path / "out", SMALL, workers=0)
    assert len(result.results) == 1
    (failure,) = result.failures
    assert failure.path == two
    assert "has the same name as" in str(failure.error) and "separate --output" in str(failure.error)


# -- killed jobs -----------------------------------------------------------------------------------------------------


def _tile_in_subprocess(slide: Path, output: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-c", "from histo_daen.cli import main; main()", "tile", str(slide), "-o", str(output),
               "--tile-size", "32", "--target-mpp", "0.5", "--workers", "1"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.slow
@pytest.mark.parametrize("kill_signal", [signal.SIGKILL, signal.SIGINT])
def test_killed_job_resumes_to_the_same_bytes_as_an_uninterrupted_one(
    tiny_slide: SyntheticSlide, tmp_path: Path, kill_signal: signal.Signals
) -> None:
    config = TileConfig(tile_size=32, target_mpp=0.5)
    killed = tmp_path / "killed"
    process = _tile_in_subprocess(tiny_slide.path, killed)
    journal = killed / "tiny.partial" / "progress.csv"
    deadline = time.monotonic() + 120
    while len(read_journal(journal)) < 64 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(process.pid, kill_signal)  # the command and its workers, as Ctrl-C or an out-of-memory kill would
    process.wait(timeout=60)
    assert not (killed / "tiny").exists(), "the job finished before it could be killed"
    done_before = len(read_journal(journal))
    assert done_before >= 64

    resumed = tile_slide(tiny_slide.path, killed, config, workers=2)
    assert resumed.n_skipped >= done_before and resumed.n_written == resumed.n_tiles - resumed.n_skipped > 0
    uninterrupted = tmp_path / "uninterrupted"
    tile_slide(tiny_slide.path, uninterrupted, config, workers=2)
    assert _files(killed / "tiny") == _files(uninterrupted / "tiny")
    assert not list(killed.glob("*.partial"))
