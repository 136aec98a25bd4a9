"""``tile_cohort``: every slide into its own folder, bad slides reported, shards, the cohort's folder names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from histo_daen.config.schema import TileConfig
from histo_daen.data.synthetic_slide import SyntheticSlide
from histo_daen.jobs.cohort import Shard, SlideOutcome
from histo_daen.jobs.tile import tile_cohort
from histo_daen.tiling import SlideTilingResult
from histo_daen.tiling.manifest import read_manifest

SMALL = TileConfig(tile_size=64)


def _copy(slide: SyntheticSlide, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(slide.path, folder / name))


def test_cohort_reports_bad_slides_and_finishes_the_others(
    tiny_tiff_slide: SyntheticSlide, not_a_slide: Path, truncated_slide: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    _copy(tiny_tiff_slide, inputs, "small.tiff")
    shutil.copyfile(not_a_slide, inputs / "notes.svs")
    shutil.copyfile(truncated_slide, inputs / "truncated.svs")
    (inputs / "small.mask.png").write_bytes(b"not a slide name: skipped in folders")
    seen: list[SlideOutcome[SlideTilingResult]] = []
    report = tile_cohort([inputs, tmp_path / "missing.svs"], tmp_path / "out", SMALL, workers=0, on_outcome=seen.append)
    assert [o.slide.name for o in report.succeeded] == ["small.tiff"]
    messages = {o.slide.name: o.error or "" for o in report.failed}
    assert sorted(messages) == ["missing.svs", "notes.svs", "truncated.svs"]
    assert "missing.svs: does not exist" in messages["missing.svs"]
    assert "notes.svs: is not a slide OpenSlide or tiffslide can open" in messages["notes.svs"]
    assert "truncated.svs: cannot be decoded" in messages["truncated.svs"]
    assert seen == list(report.outcomes) and len(seen) == 4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["small"]


def test_each_slide_gets_its_folder_and_the_same_tiles_as_alone(
    tiny_tiff_slide: SyntheticSlide, tmp_path: Path
) -> None:
    one = _copy(tiny_tiff_slide, tmp_path / "in", "a.tiff")
    two = _copy(tiny_tiff_slide, tmp_path / "in", "a.tif")  # the stems collide: a_tif/ and a_tiff/
    report = tile_cohort([one, two], tmp_path / "out", SMALL, workers=0)
    assert [(o.folder.name if o.folder else None, o.status) for o in report.outcomes] == [
        ("a_tif", "done"),
        ("a_tiff", "done"),
    ]
    rows = [read_manifest(tmp_path / "out" / name / "manifest.csv") for name in ("a_tif", "a_tiff")]
    assert [row["sha256"] for row in rows[0]] == [row["sha256"] for row in rows[1]]


def test_a_rerun_skips_finished_slides(tiny_tiff_slide: SyntheticSlide, tmp_path: Path) -> None:
    tile_cohort([tiny_tiff_slide.path], tmp_path, SMALL, workers=0)
    (again,) = tile_cohort([tiny_tiff_slide.path], tmp_path, SMALL, workers=0).outcomes
    assert again.status == "skipped" and again.result is not None and again.result.n_written == 0


@pytest.mark.slow
def test_shards_split_the_cohort(tiny_tiff_slide: SyntheticSlide, tmp_path: Path) -> None:
    for name in ("a.tiff", "b.tiff", "c.tiff"):
        _copy(tiny_tiff_slide, tmp_path / "in", name)
    first = tile_cohort([tmp_path / "in"], tmp_path / "out", SMALL, workers=0, shard=Shard(0, 2))
    second = tile_cohort([tmp_path / "in"], tmp_path / "out", SMALL, workers=0, shard="1/2")
    assert [o.slide.name for o in first.succeeded] == ["a.tiff", "c.tiff"]
    assert [o.slide.name for o in second.succeeded] == ["b.tiff"]


def test_two_slides_with_one_name_do_not_overwrite_each_other(tiny_tiff_slide: SyntheticSlide, tmp_path: Path) -> None:
    one = _copy(tiny_tiff_slide, tmp_path / "x", "a.tiff")
    two = _copy(tiny_tiff_slide, tmp_path / "y", "a.tiff")
    report = tile_cohort([one, two], tmp_path / "out", SMALL, workers=0)
    assert len(report.succeeded) == 1
    (failure,) = report.failed
    assert failure.slide == two
    assert "has the same file name as" in (failure.error or "") and "separate output folders" in (failure.error or "")
