"""``histo-daen export geojson``: its whole bad-input contract (numbers, damaged maps).

Missing and unfinished maps are in ``test_export.py``. Each case here: the input, the one line the user sees, the
exit code, and what is on disk afterwards (never an empty or partial GeoJSON).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from histo_daen.cli import cli

from histo_daen.data.synthetic_slide import SyntheticSlide

DAMAGED_HINT = "Segment the slide again (histo-daen segment --overwrite), or restore the map from a copy."


@pytest.fixture(scope="module")
def finished_map(
    segment_checkpoint: Path, tiny_slide: SyntheticSlide, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A finished map in chunks of 32 px: 12 label chunks, glass-only ones among them."""
    output = tmp_path_factory.mktemp("bad_export") / "maps"
    result = CliRunner().invoke(
        cli,
        ["segment", str(tiny_slide.path), "--checkpoint", str(segment_checkpoint), "-o", str(output), "--workers", "0",
         "chunk_size=32", "geojson=false", "overview=false"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return output / "tiny" / "map.zarr"


def _copy(finished_map: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "map.zarr"
    shutil.copytree(finished_map, copy)
    return copy


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--simplify", "nan", "geojson_simplify must be a finite number, got nan"),
        ("--simplify", "inf", "geojson_simplify must be a finite number, got inf"),
        ("--min-area", "nan", "geojson_min_area_um2 must be a finite number, got nan"),
    ],
)
def test_numbers_that_are_not_finite_are_refused(
    invoke: Callable[..., Any], finished_map: Path, tmp_path: Path, option: str, value: str, message: str
) -> None:
    target = tmp_path / "out.geojson"
    outcome = invoke("export", "geojson", finished_map, "-o", target, option, value)
    assert outcome.code == 1
    assert outcome.error == f"Error: options: {message}"
    assert not target.exists()


def test_a_map_missing_a_label_chunk_is_an_error_not_an_empty_file(
    invoke: Callable[..., Any], finished_map: Path, tmp_path: Path
) -> None:
    damaged = _copy(finished_map, tmp_path)
    (damaged / "labels" / "tissue_classes" / "s0" / "0" / "0").unlink()  # a glass chunk: zarr would read zeros
    target = tmp_path / "out.geojson"
    outcome = invoke("export", "geojson", damaged, "-o", target)
    assert outcome.code == 1
    assert outcome.error == (
        f"Error: {damaged}: is damaged: 1 of 12 chunks of labels/tissue_classes/s0 are missing. {DAMAGED_HINT}"
    )
    assert not target.exists()


@pytest.mark.parametrize(
    ("chunk", "damage"),
    [("labels/tissue_classes/s0/2/3", "flip"), ("labels/tissue_classes/s0/2/3", "cut"), ("s0/1/2/3", "cut")],
)
def test_a_map_with_a_corrupt_chunk_is_an_error_naming_the_map(
    invoke: Callable[..., Any], finished_map: Path, tmp_path: Path, chunk: str, damage: str
) -> None:
    damaged = _copy(finished_map, tmp_path)
    path = damaged / chunk
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01  # one bit of the compressed payload
    else:
        data = data[:5]
    path.write_bytes(bytes(data))
    target = tmp_path / "out.geojson"
    outcome = invoke("export", "geojson", damaged, "-o", target)
    assert outcome.code == 1
    # The decoder's own words follow (Zstandard's checksum or frame error); the line names the map and what to do.
    assert outcome.error.startswith(f"Error: {damaged}: is damaged: a chunk cannot be decoded (Zstd decompression")
    assert outcome.error.endswith(f"). {DAMAGED_HINT}")
    assert not target.exists() and not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize("case", ["under_a_file", "unwritable", "a_folder", "exists"])
def test_an_output_file_that_cannot_be_used_is_one_error_and_changes_nothing(
    invoke: Callable[..., Any],
    bad_output: Callable[..., Any],
    disk_state: Callable[..., Any],
    finished_map: Path,
    tmp_path: Path,
    case: str,
) -> None:
    bad = bad_output(case, "map.geojson")
    before = disk_state(tmp_path)
    outcome = invoke("export", "geojson", finished_map, "-o", bad.path)
    assert outcome.code == 1 and bad.words in outcome.error
    assert disk_state(tmp_path) == before
