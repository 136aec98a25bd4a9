"""``histo-daen tile`` from the command line: summary lines, files, exit codes, one clear Error line per bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from histo_daen.cli import cli

from histo_daen.data.synthetic_slide import SyntheticSlide

FAST = ("--tile-size", "64", "--workers", "1")


def _run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["tile", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_help_teaches_with_examples() -> None:
    result = CliRunner().invoke(cli, ["tile", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert "histo-daen tile slide.svs -o tiles/" in result.output
    for option in ("--target-mpp", "--tile-size", "--overlap", "--min-tissue", "--format", "--backend",
                   "--slide-mpp", "--workers", "--shard", "--overwrite", "--config"):  # fmt: skip
        assert option in result.output


def test_one_slide_prints_its_summary_and_writes_the_manifest(tiny_slide: SyntheticSlide, tmp_path: Path) -> None:
    code, out, err = _run(tiny_slide.path, "-o", tmp_path, *FAST)
    assert code == 0, err
    assert out.startswith("tiny.svs: ")
    assert " tiles written, 0 skipped (already present), tissue " in out and " mm² -> " in out
    assert (tmp_path / "tiny" / "manifest.csv").is_file()
    code, out, _ = _run(tiny_slide.path, "-o", tmp_path, *FAST)
    assert code == 0 and "tiny.svs: 0 tiles written, " in out


def test_config_file_and_options_combine(tiny_slide: SyntheticSlide, tmp_path: Path) -> None:
    config = tmp_path / "tile.yaml"
    config.write_text("tile_size: 48\nformat: jpeg\n")
    code, _, err = _run(
        tiny_slide.path, "-o", tmp_path / "out", "--config", config, "--tile-size", "80", "--workers", "0"
    )
    assert code == 0, err
    tiles = list((tmp_path / "out" / "tiny" / "tiles").iterdir())
    assert tiles and all(t.suffix == ".jpg" for t in tiles)
    assert "tile_size: 80" in (tmp_path / "out" / "tiny" / "config.yaml").read_text()


def test_slide_without_mpp_needs_slide_mpp(slide_without_mpp: Path, tmp_path: Path) -> None:
    code, out, err = _run(slide_without_mpp, "-o", tmp_path, *FAST)
    assert code == 1 and out == ""
    assert err.startswith("Error: ") and "no_mpp.tiff: the file has no microns-per-pixel metadata" in err
    assert "--slide-mpp" in err and "Traceback" not in err
    code, out, err = _run(slide_without_mpp, "-o", tmp_path, "--slide-mpp", "0.5", *FAST)
    assert code == 0, err
    assert out.startswith("no_mpp.tiff: ")


def test_a_bad_slide_among_good_ones_exits_3(tiny_slide: SyntheticSlide, not_a_slide: Path, tmp_path: Path) -> None:
    code, out, err = _run(tiny_slide.path, not_a_slide, tmp_path / "gone.svs", "-o", tmp_path / "out", *FAST)
    assert code == 3
    assert "tiny.svs: " in out and "3 slides: 1 tiled, 2 failed." in out
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 2 and "Traceback" not in err
    assert any("gone.svs: does not exist" in line for line in errors)
    assert any("notes.svs: is not a slide" in line for line in errors)


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        ("blank_slide", r"blank\.svs: no tissue found"),
        ("truncated_slide", r"truncated\.svs: cannot be decoded .*truncated, corrupt"),
        ("not_a_slide", r"notes\.svs: is not a slide OpenSlide or tiffslide can open"),
    ],
)
def test_each_bad_slide_gets_one_error_line(
    fixture: str, message: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    code, out, err = _run(request.getfixturevalue(fixture), "-o", tmp_path / "out", *FAST)
    assert code == 1 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("Error: ")
    assert re.search(message, line)
    assert not any((tmp_path / "out").iterdir())  # nothing half-written


def test_folder_argument_without_slides(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = _run(tmp_path / "empty", "-o", tmp_path / "out")
    assert code == 1
    assert "empty: is a folder with no slide files in it" in err


def test_unwritable_output_is_one_error(tiny_slide: SyntheticSlide, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    code, _, err = _run(tiny_slide.path, "-o", tmp_path / "file" / "out")
    assert code == 1
    assert err.startswith("Error: ") and "cannot be created: " in err and "file is a file" in err


def test_bad_shard_is_a_config_error(tiny_slide: SyntheticSlide, tmp_path: Path) -> None:
    code, _, err = _run(tiny_slide.path, "-o", tmp_path, "--shard", "4/4")
    assert code == 1 and "Error: shard 4/4: need 0 <= K < N" in err


def test_changed_settings_name_the_change(tiny_slide: SyntheticSlide, tmp_path: Path) -> None:
    assert _run(tiny_slide.path, "-o", tmp_path, *FAST)[0] == 0
    code, _, err = _run(tiny_slide.path, "-o", tmp_path, "--tile-size", "96", "--workers", "1")
    assert code == 1
    assert (
        "tiny: was tiled from another slide or with other settings (parameters.tile_size: stored 64, requested 96). "
        "Pass --overwrite" in err
    )


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "backend", "message"),
    [
        (
            "unopenable.tiff",
            "auto",
            "unopenable.tiff: cannot be decoded at level 0 .*Unsupported TIFF compression: 52479",
        ),
        ("unopenable.tiff", "openslide", "unopenable.tiff: is not a slide OpenSlide can open"),
        ("unopenable.tiff", "tiffslide", "unopenable.tiff: cannot be decoded at level 0 .*52479"),
        ("unreadable.svs", "auto", "unreadable.svs: cannot be decoded at level 0 .*Bogus marker length"),
        ("unreadable.svs", "tiffslide", "unreadable.svs: cannot be decoded at level 0 .*Bogus marker length"),
        ("boxes.tiff", "auto", r"boxes.tiff: the file says 352.8 um/px, outside the plausible .*--slide-mpp"),
        ("small.svs", "auto", r"small.svs: is 16x16 px .*smaller than one 224-px tile"),
    ],
)
def test_real_problem_files_get_clear_errors(
    openslide_fixtures: Path, name: str, backend: str, message: str, tmp_path: Path
) -> None:
    code, out, err = _run(openslide_fixtures / name, "-o", tmp_path, "--backend", backend, "--workers", "1")
    assert code == 1 and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("Error: ") and re.search(message, line)


@pytest.mark.realdata
def test_real_boxes_tiff_tiles_with_slide_mpp(openslide_fixtures: Path, tmp_path: Path) -> None:
    # 300 x 250 px of pure red, green and blue boxes: marker colours, not stain, so the tissue mask finds none and
    # says so once the resolution is given; --min-tissue 0 (every tile) tiles it.
    common = ("-o", tmp_path, "--slide-mpp", "4", "--target-mpp", "8", "--tile-size", "32", "--workers", "1")
    code, out, err = _run(openslide_fixtures / "boxes.tiff", *common)
    assert code == 1 and "boxes.tiff: no tissue found" in err
    code, out, err = _run(openslide_fixtures / "boxes.tiff", *common, "--min-tissue", "0")
    assert code == 0, err
    assert out.startswith("boxes.tiff: ") and "tiles written" in out


def test_the_shipped_config_file_works(tiny_slide: SyntheticSlide, tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[2] / "configs" / "tile.yaml"
    code, _, err = _run(tiny_slide.path, "-o", tmp_path, "--config", config, "--workers", "1")
    assert code == 0, err
    tiles = sorted((tmp_path / "tiny" / "tiles").iterdir())
    assert tiles and tiles[0].suffix == ".jpg"
    assert "target_mpp: 0.5" in (tmp_path / "tiny" / "config.yaml").read_text()


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_level0_tiles_equal_a_level0_read_shrunk_with_area_averaging(
    tiny_slide: SyntheticSlide, tmp_path: Path, backend: str
) -> None:
    # The plain way: OpenSlide's level-0 read_region, shrunk 2x (0.5 -> 1.0 um/px) with Pillow's area filter.
    import numpy as np
    import openslide
    from PIL import Image

    from histo_daen.tiling.manifest import read_manifest

    code, _, err = _run(tiny_slide.path, "-o", tmp_path, "--level0", "--backend", backend, *FAST)
    assert code == 0, err
    rows = read_manifest(tmp_path / "tiny" / "manifest.csv")
    assert len(rows) > 3
    with openslide.OpenSlide(tiny_slide.path) as reference:
        for row in rows:
            x, y, side = int(row["x"]), int(row["y"]), int(row["width"])
            expected = reference.read_region((x, y), 0, (side, side)).convert("RGB").resize((64, 64), Image.BOX)
            tile = Image.open(tmp_path / "tiny" / row["path"]).convert("RGB")
            assert np.array_equal(np.asarray(tile), np.asarray(expected)), row["path"]
    assert "use_pyramid: false" in (tmp_path / "tiny" / "config.yaml").read_text()


def test_switching_pyramid_to_level0_names_the_change(tiny_slide: SyntheticSlide, tmp_path: Path) -> None:
    assert _run(tiny_slide.path, "-o", tmp_path, *FAST)[0] == 0
    code, _, err = _run(tiny_slide.path, "-o", tmp_path, "--level0", *FAST)
    assert code == 1 and "parameters.use_pyramid: stored True, requested False" in err


def test_quiet_shows_no_progress_and_a_log_gets_lines_not_redraws(tiny_slide: SyntheticSlide, tmp_path: Path) -> None:
    quiet = CliRunner().invoke(cli, ["-q", "tile", str(tiny_slide.path), "-o", str(tmp_path / "q"), *FAST])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert quiet.stdout.startswith("tiny.svs: ")
    logged = CliRunner().invoke(cli, ["tile", str(tiny_slide.path), "-o", str(tmp_path / "l"), *FAST])
    assert logged.exit_code == 0
    assert "\r" not in logged.stderr  # click's runner is not a terminal: whole lines, as in a log file
    assert any(line.startswith("[1/1] tiny.svs:") and "tile/s" in line for line in logged.stderr.splitlines())
