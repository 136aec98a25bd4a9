"""One rule for reusing outputs: same record or an error naming every difference in one wording."""

from __future__ import annotations

from pathlib import Path

import pytest

from histo_daen.errors import CheckpointError, OutputExistsError
from histo_daen.provenance import describe_changes, differences, require_same, slide_identity

IDENTITY = {
    "path": "/data/a.svs",
    "name": "a.svs",
    "size_bytes": 1000,
    "dimensions": [200, 100],
    "level_count": 3,
    "mpp": 0.25,
    "mpp_source": "metadata",
    "vendor": "aperio",
    "header_sha256": "abc",
}


def test_equal_records_pass_whatever_their_key_order_and_one_changed_value_does_not() -> None:
    stored = {"a": 1, "b": {"c": 2}}
    assert require_same(stored, {"b": {"c": 2}, "a": 1}, path="out", subject="differs", hint="") is None
    with pytest.raises(OutputExistsError):
        require_same(stored, {"a": 1, "b": {"c": 3}}, path="out", subject="differs", hint="")


def test_differences_are_named_stored_then_requested() -> None:
    with pytest.raises(OutputExistsError) as caught:
        require_same(
            {"tile_size": 128, "model": {"variant": "daen"}},
            {"tile_size": 96, "model": {"variant": "seam"}},
            path=Path("tiles/a"),
            subject="was tiled with other settings",
            hint="Pass --overwrite.",
        )
    assert str(caught.value) == (
        "tiles/a: was tiled with other settings (model.variant: stored 'daen', requested 'seam'; "
        "tile_size: stored 128, requested 96). Pass --overwrite."
    )


def test_the_error_class_is_the_callers() -> None:
    with pytest.raises(CheckpointError, match=r"last\.pt: was made with another model config \(width: stored 1\.0"):
        require_same(
            {"width": 1.0},
            {"width": 0.5},
            path="last.pt",
            subject="was made with another model config",
            hint="",
            error=CheckpointError,
        )


def test_ignored_keys_and_sections_may_differ() -> None:
    stored = {"data": {"workers": 2, "root": "a"}, "seed": 0}
    requested = {"data": {"workers": 8, "root": "b"}, "seed": 1}
    assert differences(stored, requested, ignore=("data",)) == {"seed": (0, 1)}
    assert differences(stored, requested, ignore=("data.workers", "seed")) == {"data.root": ("a", "b")}


def test_a_slide_is_the_same_slide_when_moved_or_renamed() -> None:
    moved = IDENTITY | {"path": "/elsewhere/b.svs", "name": "b.svs"}
    assert differences({"slide": IDENTITY}, {"slide": moved}) == {}
    assert slide_identity(IDENTITY) == {"size_bytes": 1000, "dimensions": [200, 100], "header_sha256": "abc"}


def test_a_rewritten_slide_is_another_slide() -> None:
    rewritten = IDENTITY | {"header_sha256": "def"}
    assert differences({"slide": IDENTITY}, {"slide": rewritten}) == {"slide.header_sha256": ("abc", "def")}


def test_further_slide_facts_are_compared_too() -> None:
    stored = {"slide": IDENTITY | {"bounds_level0": [0, 0, 200, 100]}}
    requested = {"slide": IDENTITY | {"bounds_level0": [10, 0, 190, 100]}}
    assert list(differences(stored, requested)) == ["slide.bounds_level0"]


def test_long_lists_of_changes_are_counted() -> None:
    changes = {f"k{i}": (i, i + 1) for i in range(9)}
    assert describe_changes(changes).endswith("; +3 more")
