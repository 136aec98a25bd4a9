"""``segment_cohort``: outputs per slide, the cohort table, failures isolated, skip/overwrite, shards, kill + resume."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage
from shapely.geometry import shape

from histo_daen.classes import LUAD
from histo_daen.config.schema import SegmentConfig
from histo_daen.data.synthetic_slide import SyntheticSlide
from histo_daen.data.tissue_cases import write_tissue_case
from histo_daen.errors import ConfigError, OutputExistsError
from histo_daen.evaluation.seams import seam_ratio
from histo_daen.export.zarr_map import read_tissue_map
from histo_daen.jobs.cohort import Shard
from histo_daen.jobs.segment import segment_cohort

# Small bands so a tiny slide's map (96 x 128 px at 8 um/px) has several of them.
CONFIG = SegmentConfig(batch_size=8, workers=1, chunk_size=16, pyramid_levels=2, overview_max_side=256)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_one_slide_gives_map_geojson_picture_and_summary(
    tiny_tiff_slide: SyntheticSlide, segment_checkpoint: Path, tmp_path: Path, check_qupath_geojson, check_ome_zarr
) -> None:
    report = segment_cohort([tiny_tiff_slide.path], tmp_path, checkpoint=segment_checkpoint, config=CONFIG)
    (outcome,) = report.outcomes
    assert outcome.status == "done" and outcome.folder == tmp_path / "tiny"
    tissue_map = read_tissue_map(outcome.folder / "map.zarr")
    # 1024 x 768 px at 0.5 um/px; tiles at 2 um/px, map stride 4 -> 8 um map pixels, 16 level-0 pixels each.
    assert tissue_map.shape_hw == (48, 64) and tissue_map.map_downsample == 16.0
    labels = tissue_map.labels(0)[:]
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4}
    assert labels[0, 0] == 0 and labels[-1, -1] == 0  # glass corners around the disc
    truth = tiny_tiff_slide.read_mask() > 0  # ground truth at 16 level-0 px per pixel, like the map
    tissue = labels > 0
    assert (tissue & truth).sum() / (tissue | truth).sum() > 0.85  # tissue found where the slide has it
    summary = json.loads((outcome.folder / "summary.json").read_text())
    assert summary["label_source"] == "predicted"
    assert summary["slide"]["name"] == "tiny.tiff" and summary["model"]["checkpoint"] == "last.pt"
    # A TIFF without OpenSlide bounds: the whole of level 0.
    assert tissue_map.provenance["slide"]["bounds_level0"] == [0, 0, 1024, 768]
    check_ome_zarr(outcome.folder / "map.zarr")
    assert sum(area["percent_of_tissue"] for area in summary["areas"]) == pytest.approx(100.0)
    tissue_pixels = int((labels > 0).sum())
    assert summary["tissue_mm2"] == pytest.approx(tissue_pixels * (8 / 1000) ** 2)
    # The seam ratio at the tile step: 64-px tiles with 8 px of context each side and half the other 48 overlapping
    # are 24 model px = 6 map px apart.
    assert summary["map"]["context"] == 8 and summary["map"]["overlap"] == 40 and summary["map"]["tile_step"] == 6
    assert summary["map"]["seam_ratio"] == seam_ratio(np.asarray(labels), 6)
    collection = check_qupath_geojson(outcome.folder / "map.geojson", region=(0, 0, 1024, 768))
    assert collection["features"] and all(shape(f["geometry"]).area > 0 for f in collection["features"])
    assert (outcome.folder / "overview.png").stat().st_size > 1000
    (row,) = _csv_rows(report.table)
    assert row["slide"] == "tiny.tiff" and row["status"] == "done"
    assert float(row["tissue_mm2"]) == pytest.approx(summary["tissue_mm2"], abs=1e-4)
    assert row["seam_ratio"] == ("" if summary["map"]["seam_ratio"] is None else f"{summary['map']['seam_ratio']:.3f}")
    assert not (outcome.folder / "map.zarr.partial").exists()
    assert (tmp_path / "config.yaml").exists()


def test_darkly_stained_lymphocytes_are_all_mapped(segment_checkpoint: Path, tmp_path: Path) -> None:
    # Lymphocyte sheets stained so dark (4.5x haematoxylin) that thumbnail pixels reach near-black: once cut out of
    # the tissue mask as "black ink" (a third of them went unmapped); tissue is tissue however dark.
    slide = write_tissue_case("dark_lymphoid", tmp_path / "slides", size_wh=(2048, 1536), seed=0)
    report = segment_cohort([slide.path], tmp_path / "maps", checkpoint=segment_checkpoint, config=CONFIG)
    (outcome,) = report.outcomes
    assert outcome.status == "done", outcome.error
    labels = read_tissue_map(outcome.folder / "map.zarr").labels(0)[:]
    truth = slide.read_mask()  # 8 um/px, the map's grid (2 um/px tiles, map stride 4)
    assert labels.shape == truth.shape
    lymphocytes = truth == LUAD.by_code("LYM").map_value
    unmapped = lymphocytes & (labels == 0)
    assert lymphocytes.sum() > 3000
    # None unmapped away from the glass; on the tissue's border row, pixels half glass may go either way.
    away_from_glass = ndimage.binary_erosion(truth > 0, iterations=2)
    assert not (unmapped & away_from_glass).any()
    assert unmapped.sum() <= 0.005 * lymphocytes.sum()  # measured: 5 of 5725 (0.09 %)


def test_failing_slides_are_reported_and_the_others_finish(
    tiny_tiff_slide: SyntheticSlide,
    blank_slide: Path,
    slide_without_mpp: Path,
    truncated_slide: Path,
    segment_checkpoint: Path,
    tmp_path: Path,
) -> None:
    slides = [blank_slide, slide_without_mpp, tiny_tiff_slide.path, truncated_slide]
    report = segment_cohort(slides, tmp_path / "out", checkpoint=segment_checkpoint, config=CONFIG)
    status = {outcome.slide.name: outcome.status for outcome in report.outcomes}
    assert status == {"blank.svs": "failed", "no_mpp.tiff": "failed", "tiny.tiff": "done", "truncated.svs": "failed"}
    errors = {outcome.slide.name: outcome.error for outcome in report.failed}
    assert "blank.svs" in errors["blank.svs"] and "min_tissue" in errors["blank.svs"]
    assert "no_mpp.tiff" in errors["no_mpp.tiff"] and "--slide-mpp" in errors["no_mpp.tiff"]
    assert "truncated.svs" in errors["truncated.svs"]
    rows = {row["slide"]: row for row in _csv_rows(report.table)}
    assert rows["blank.svs"]["status"] == "failed" and rows["blank.svs"]["error"] == errors["blank.svs"]
    assert rows["tiny.tiff"]["status"] == "done"
    assert not (tmp_path / "out" / "blank" / "map.zarr").exists()


def test_rerun_skips_finished_slides_and_overwrite_redoes_them(
    tiny_tiff_slide: SyntheticSlide, segment_checkpoint: Path, tmp_path: Path
) -> None:
    first = segment_cohort([tiny_tiff_slide.path], tmp_path, checkpoint=segment_checkpoint, config=CONFIG)
    labels = read_tissue_map(tmp_path / "tiny" / "map.zarr").labels(0)[:]
    again = segment_cohort([tiny_tiff_slide.path], tmp_path, checkpoint=segment_checkpoint, config=CONFIG)
    assert (
        again.outcomes[0].status == "skipped" and again.outcomes[0].result.summary == first.outcomes[0].result.summary
    )
    redone = segment_cohort(
        [tiny_tiff_slide.path], tmp_path, checkpoint=segment_checkpoint, config=CONFIG, overwrite=True
    )
    assert redone.outcomes[0].status == "done"
    assert np.array_equal(read_tissue_map(tmp_path / "tiny" / "map.zarr").labels(0)[:], labels)


def test_a_map_made_with_other_settings_is_not_reused(
    tiny_tiff_slide: SyntheticSlide, segment_checkpoint: Path, tmp_path: Path
) -> None:
    segment_cohort([tiny_tiff_slide.path], tmp_path / "maps", checkpoint=segment_checkpoint, config=CONFIG)
    (tmp_path / "maps" / "config.yaml").unlink()  # only the map itself knows its settings now
    other = SegmentConfig(**{**CONFIG.__dict__, "min_tissue": 0.2})
    report = segment_cohort([tiny_tiff_slide.path], tmp_path / "maps", checkpoint=segment_checkpoint, config=other)
    (failed,) = report.failed
    assert "map.zarr: was made with another model, slide or settings" in failed.error
    assert "segment.min_tissue: stored 0.05, requested 0.2" in failed.error and "--overwrite" in failed.error
    assert read_tissue_map(tmp_path / "maps" / "tiny" / "map.zarr").provenance["segment"]["min_tissue"] == 0.05


def test_a_map_whose_tile_layout_the_defaults_no_longer_give_is_not_reused(
    tiny_tiff_slide: SyntheticSlide, segment_checkpoint: Path, tmp_path: Path
) -> None:
    """A map made before ``context`` was on by default records the same settings (``overlap: null``) but was laid
    out with other tiles; its record lacks the resolved geometry, and a rerun must not take it for today's."""
    segment_cohort([tiny_tiff_slide.path], tmp_path, checkpoint=segment_checkpoint, config=CONFIG)
    group = zarr.open_group(tmp_path / "tiny" / "map.zarr", mode="r+")
    attrs = dict(group.attrs["histo_daen"])
    assert attrs["provenance"]["geometry"] == {"overlap": 40, "context": 8}  # 64-px tiles
    attrs["provenance"] = {key: value for key, value in attrs["provenance"].items() if key != "geometry"}
    group.attrs["histo_daen"] = attrs  # as an earlier version wrote it
    report = segment_cohort([tiny_tiff_slide.path], tmp_path, checkpoint=segment_checkpoint, config=CONFIG)
    (failed,) = report.failed
    assert "map.zarr: was made with another model, slide or settings (geometry: stored None" in failed.error


def test_a_folder_of_maps_made_with_other_settings_is_refused_before_any_slide(
    tiny_tiff_slide: SyntheticSlide, segment_checkpoint: Path, tmp_path: Path
) -> None:
    segment_cohort([tiny_tiff_slide.path], tmp_path, checkpoint=segment_checkpoint, config=CONFIG)
    record = (tmp_path / "config.yaml").read_bytes()
    other = SegmentConfig(**{**CONFIG.__dict__, "context": 0})
    with pytest.raises(OutputExistsError) as refused:
        segment_cohort([tiny_tiff_slide.path], tmp_path, checkpoint=segment_checkpoint, config=other)
    assert str(refused.value).startswith(f"{tmp_path / 'config.yaml'}: records maps made with other settings")
    assert "segment.context: stored None, requested 0" in str(refused.value) and "--overwrite" in str(refused.value)
    assert (tmp_path / "config.yaml").read_bytes() == record  # the record of the maps that are there stays
    # Settings that do not change the map may change on a rerun, and are recorded.
    faster = SegmentConfig(**{**CONFIG.__dict__, "batch_size": 4})
    again = segment_cohort([tiny_tiff_slide.path], tmp_path, checkpoint=segment_checkpoint, config=faster)
    assert again.outcomes[0].status == "skipped" and "batch_size: 4" in (tmp_path / "config.yaml").read_text()
    redone = segment_cohort(
        [tiny_tiff_slide.path], tmp_path, checkpoint=segment_checkpoint, config=other, overwrite=True
    )
    assert redone.outcomes[0].status == "done" and "context: 0" in (tmp_path / "config.yaml").read_text()


def test_an_unreadable_config_record_is_refused_and_kept(
    tiny_tiff_slide: SyntheticSlide, segment_checkpoint: Path, tmp_path: Path
) -> None:
    (tmp_path / "config.yaml").write_text("overlap: [not, a, number]\n")
    with pytest.raises(OutputExistsError, match=r"config\.yaml: cannot be read as a segment config"):
        segment_cohort([tiny_tiff_slide.path], tmp_path, checkpoint=segment_checkpoint, config=CONFIG)
    assert (tmp_path / "config.yaml").read_text() == "overlap: [not, a, number]\n"
    assert not (tmp_path / "tiny").exists()


def test_shards_split_the_sorted_slides(
    tiny_tiff_slide: SyntheticSlide, tiny_slide: SyntheticSlide, segment_checkpoint: Path, tmp_path: Path
) -> None:
    slides = [tiny_slide.path, tiny_tiff_slide.path]
    done = []
    for index in range(2):
        report = segment_cohort(slides, tmp_path, checkpoint=segment_checkpoint, config=CONFIG, shard=Shard(index, 2))
        done.append([outcome.slide for outcome in report.outcomes])
    assert done == [[tiny_slide.path], [tiny_tiff_slide.path]]  # sorted by path: tiny.svs, then tiny.tiff
    # Both stems are "tiny": the folders take the suffix, in every shard alike.
    assert (tmp_path / "tiny_svs" / "summary.json").exists() and (tmp_path / "tiny_tiff" / "summary.json").exists()
    assert sorted(row["slide"] for row in _csv_rows(tmp_path / "summary.csv")) == ["tiny.svs", "tiny.tiff"]


def test_a_moved_and_renamed_slide_resumes_its_map(
    tiny_tiff_slide: SyntheticSlide, segment_checkpoint: Path, tmp_path: Path
) -> None:
    segment_cohort([tiny_tiff_slide.path], tmp_path / "out", checkpoint=segment_checkpoint, config=CONFIG)
    moved = tmp_path / "elsewhere" / "tiny.tif"  # same content, another folder and suffix: the same slide
    moved.parent.mkdir()
    shutil.copyfile(tiny_tiff_slide.path, moved)
    (tmp_path / "out" / "tiny" / "summary.json").unlink()  # as if the first run was killed after its map
    report = segment_cohort([moved], tmp_path / "out", checkpoint=segment_checkpoint, config=CONFIG)
    (outcome,) = report.outcomes
    assert outcome.status == "done" and outcome.result.stats is None  # the finished map was reused, not recomputed


def test_inputs_that_name_no_slide_are_reported(segment_checkpoint: Path, tmp_path: Path) -> None:
    report = segment_cohort([tmp_path / "typo.svs"], tmp_path / "out", checkpoint=segment_checkpoint, config=CONFIG)
    (failed,) = report.failed
    assert "typo.svs: does not exist" in failed.error
    assert not (tmp_path / "out" / "typo").exists()


_KILLABLE_RUN = """
import sys
from pathlib import Path
from histo_daen.config import load_config
from histo_daen.config.schema import SegmentConfig
from histo_daen.evaluation.seams import seam_ratio
from histo_daen.errors import ConfigError
from histo_daen.jobs.segment import segment_cohort

config = load_config(SegmentConfig, overrides=sys.argv[4:])
segment_cohort([Path(sys.argv[1])], Path(sys.argv[2]), checkpoint=Path(sys.argv[3]), config=config)
"""

# Six bands of 16 map rows, batches of one tile, two test-time views: slow enough to be killed in the middle.
_SLOW = ["chunk_size=16", "batch_size=1", "workers=1", "pyramid_levels=2", "inference.flip=true"]


def _run(script: Path, slide: Path, out: Path, checkpoint: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(script), str(slide), str(out), str(checkpoint), *_SLOW]
    with open(log, "wb") as stderr:  # the child keeps its own copy of the handle
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)


@pytest.mark.slow
def test_a_killed_job_resumes_to_the_same_map(
    tiny_slide: SyntheticSlide, segment_checkpoint: Path, tmp_path: Path
) -> None:
    script, log = tmp_path / "run.py", tmp_path / "stderr.txt"
    script.write_text(_KILLABLE_RUN, encoding="utf-8")
    killed_out, reference_out = tmp_path / "killed", tmp_path / "reference"
    slide = tiny_slide.path
    process = _run(script, slide, killed_out, segment_checkpoint, log)
    partial = killed_out / "tiny" / "map.zarr.partial"
    bands_done, deadline = 0, time.monotonic() + 120
    while bands_done < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
        try:
            bands_done = zarr.open_group(partial, mode="r").attrs["histo_daen"]["bands_done"]
        except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
            continue
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert partial.exists(), f"the job ended before it could be killed: {log.read_text()}"
    attrs = zarr.open_group(partial, mode="r").attrs["histo_daen"]
    n_bands = math.ceil(attrs["shape_hw"][0] / attrs["chunk_size"])
    assert 2 <= attrs["bands_done"] < n_bands, "the job was not killed between bands; make it slower"

    resumed = _run(script, slide, killed_out, segment_checkpoint, tmp_path / "resumed.txt")
    reference = _run(script, slide, reference_out, segment_checkpoint, tmp_path / "reference.txt")
    assert resumed.wait() == 0, (tmp_path / "resumed.txt").read_text()
    assert reference.wait() == 0, (tmp_path / "reference.txt").read_text()
    killed_map = read_tissue_map(killed_out / "tiny" / "map.zarr")
    reference_map = read_tissue_map(reference_out / "tiny" / "map.zarr")
    for level in range(2):
        assert np.array_equal(killed_map.labels(level)[:], reference_map.labels(level)[:])
        assert np.array_equal(killed_map.scores(level)[:], reference_map.scores(level)[:])


def test_a_checkpoint_with_imported_classes_segments_with_generated_colours(
    tiny_tiff_slide: SyntheticSlide, tmp_path: Path, check_qupath_geojson
) -> None:
    import torch

    from histo_daen.config.schema import ModelConfig
    from histo_daen.models import build_model, checkpoint_state, save_checkpoint

    torch.manual_seed(0)
    cfg = ModelConfig(
        variant="cam", backbone="resnet18", width=0.25, num_classes=3, class_set="custom", input_size=64, input_mpp=2.0
    )
    model = build_model(cfg)
    checkpoint = save_checkpoint(tmp_path / "imported.pt", checkpoint_state(model, classes=("cat", "dog", "cow")))
    report = segment_cohort([tiny_tiff_slide.path], tmp_path / "out", checkpoint=checkpoint, config=CONFIG)
    (outcome,) = report.outcomes
    assert outcome.status == "done"
    tissue_map = read_tissue_map(outcome.folder / "map.zarr")
    assert tissue_map.classes.codes == ("cat", "dog", "cow")
    assert len(set(tissue_map.classes.colours)) == 3
    names = {
        f["properties"]["classification"]["name"]
        for f in check_qupath_geojson(outcome.folder / "map.geojson", region=(0, 0, 1024, 768))["features"]
    }
    assert names <= {"cat", "dog", "cow"} and names


def test_the_map_records_the_slide_bounds_rectangle_openslide_reports(tiny_tiff_slide: SyntheticSlide) -> None:
    from histo_daen.jobs.segment import _slide_bounds
    from histo_daen.slide import open_slide

    with open_slide(tiny_tiff_slide.path, backend="openslide") as slide:
        assert _slide_bounds(slide) == [0, 0, 1024, 768]  # no bounds: the whole of level 0
        # What OpenSlide reports for a MIRAX scan whose non-empty region starts at (100, 40).
        bounds = {"x": "100", "y": "40", "width": "800", "height": "600"}
        slide.properties.update({f"openslide.bounds-{key}": value for key, value in bounds.items()})
        assert _slide_bounds(slide) == [100, 40, 800, 600]
        slide.properties["openslide.bounds-width"] = "n/a"
        assert _slide_bounds(slide) == [0, 0, 1024, 768]


def test_settings_that_cannot_fit_the_checkpoints_tiles_are_refused_before_any_slide(
    tiny_tiff_slide: SyntheticSlide, segment_checkpoint: Path, tmp_path: Path
) -> None:
    """One error for the run, not one failed slide after another: the checkpoint reads 64-px tiles."""
    too_wide = SegmentConfig(**{**CONFIG.__dict__, "context": 32})
    with pytest.raises(ConfigError, match="context=32 must be less than half the model's tile size 64"):
        segment_cohort([tiny_tiff_slide.path], tmp_path / "maps", checkpoint=segment_checkpoint, config=too_wide)
    assert not (tmp_path / "maps").exists()
