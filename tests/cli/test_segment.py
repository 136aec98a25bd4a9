"""``histo-daen segment``: exit codes, the key output lines, the files, Error lines, shards, overwrite."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from histo_daen.cli import cli

from histo_daen.data.synthetic_slide import SyntheticSlide

# Small map bands and pictures keep the tiny slides fast.
FAST = ["chunk_size=16", "pyramid_levels=2", "overview_max_side=256"]


def _segment(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, ["segment", *args, *FAST], env=env)


def test_segment_one_slide(
    tiny_tiff_slide: SyntheticSlide, segment_checkpoint: Path, tmp_path: Path, check_qupath_geojson, check_ome_zarr
) -> None:
    out = tmp_path / "maps"
    result = _segment(str(tiny_tiff_slide.path), "--checkpoint", str(segment_checkpoint), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "tiny.tiff: done" in result.output and "tiles/s" in result.output
    assert "1 slide(s): 1 ok, 0 failed" in result.output
    folder = out / "tiny"
    assert {p.name for p in folder.iterdir()} == {"map.zarr", "map.geojson", "overview.png", "summary.json"}
    header = "slide,status,error,mpp0,map_mpp,n_tiles,seam_ratio,tissue_mm2,TE_mm2"
    assert (out / "summary.csv").read_text().startswith(header)
    assert json.loads((folder / "summary.json").read_text())["map"]["map_mpp"] == 8.0
    check_ome_zarr(folder / "map.zarr")
    assert check_qupath_geojson(folder / "map.geojson", region=(0, 0, 1024, 768))["features"]


def test_a_failing_slide_gets_an_error_line_and_the_others_finish(
    tiny_tiff_slide: SyntheticSlide, blank_slide: Path, not_a_slide: Path, segment_checkpoint: Path, tmp_path: Path
) -> None:
    slides = [str(blank_slide), str(not_a_slide), str(tiny_tiff_slide.path)]
    result = _segment(*slides, "--checkpoint", str(segment_checkpoint), "-o", str(tmp_path))
    assert result.exit_code == 3, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("Error: ") and "blank.svs" in line and "no tile" in line for line in lines)
    assert any(line.startswith("Error: ") and "notes.svs" in line for line in lines)
    assert "Traceback" not in result.output
    assert "tiny.tiff: done" in result.output and "3 slide(s): 1 ok, 2 failed" in result.output


def test_rerun_says_already_done_and_other_settings_need_overwrite(
    tiny_tiff_slide: SyntheticSlide, segment_checkpoint: Path, tmp_path: Path
) -> None:
    args = [str(tiny_tiff_slide.path), "--checkpoint", str(segment_checkpoint), "-o", str(tmp_path)]
    assert _segment(*args).exit_code == 0
    again = _segment(*args)
    assert again.exit_code == 0 and "tiny.tiff: already done" in again.output
    changed = _segment(*args, "min_tissue=0.3")
    assert changed.exit_code == 1  # the only slide given failed: its error is the whole story
    assert "Error: " in changed.output and "segment.min_tissue: stored 0.05, requested 0.3" in changed.output
    assert "--overwrite" in changed.output
    replaced = _segment(*args, "min_tissue=0.3", "--overwrite")
    assert replaced.exit_code == 0 and "tiny.tiff: done" in replaced.output


def test_shard_option_and_torchrun_rank_pick_the_same_slide(
    tiny_tiff_slide: SyntheticSlide, slide_without_mpp: Path, segment_checkpoint: Path, tmp_path: Path
) -> None:
    slides = [str(slide_without_mpp), str(tiny_tiff_slide.path)]  # sorted: .../no_mpp.tiff, .../tiny.tiff
    by_option = _segment(*slides, "--checkpoint", str(segment_checkpoint), "-o", str(tmp_path / "a"), "--shard", "1/2")
    by_rank = _segment(
        *slides,
        "--checkpoint",
        str(segment_checkpoint),
        "-o",
        str(tmp_path / "b"),
        env={"RANK": "1", "WORLD_SIZE": "2"},
    )
    for result in (by_option, by_rank):
        assert result.exit_code == 0, result.output
        assert "1 slide(s) (shard 1/2): 1 ok, 0 failed" in result.output
    for out in (tmp_path / "a", tmp_path / "b"):
        assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["tiny"]


def test_missing_slide_and_misspelt_override(segment_checkpoint: Path, tmp_path: Path) -> None:
    result = _segment(str(tmp_path / "absent.svs"), "--checkpoint", str(segment_checkpoint), "-o", str(tmp_path))
    assert result.exit_code == 1 and "Error: " in result.output and "absent.svs: does not exist" in result.output
    typo = _segment(
        str(tmp_path / "absent.svs"), "--checkpoint", str(segment_checkpoint), "-o", str(tmp_path), "batchsize=4"
    )
    assert typo.exit_code == 1 and "Error: " in typo.output and "Did you mean 'batch_size'" in typo.output


def test_missing_checkpoint_is_one_error_line(tiny_tiff_slide: SyntheticSlide, tmp_path: Path) -> None:
    result = _segment(str(tiny_tiff_slide.path), "--checkpoint", str(tmp_path / "none.pt"), "-o", str(tmp_path))
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "none.pt" in result.output
    assert "Traceback" not in result.output


def test_help_teaches_with_examples() -> None:
    result = CliRunner().invoke(cli, ["segment", "--help"])
    assert result.exit_code == 0
    assert "histo-daen segment slide.svs --checkpoint runs/daen/last.pt -o maps/" in result.output
    assert "--shard" in result.output and "--overwrite" in result.output
