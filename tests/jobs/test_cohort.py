"""The cohort rules, once for every cohort job: discovery, shards, folder names, failure isolation, progress."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from histo_daen.errors import ConfigError, NoTissueError, PathError
from histo_daen.jobs.cohort import (
    Shard,
    SlideOutcome,
    SlideTask,
    output_folder_names,
    parse_shard,
    resolve_shard,
    run_cohort,
    shard_items,
)
from histo_daen.torchrun import ProcessPlace


def _slides(folder: Path, *names: str) -> list[Path]:
    """Empty files with slide names: discovery and naming never open them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in names]
    for path in paths:
        path.write_bytes(b"")
    return paths


def _record(task: SlideTask) -> tuple[Literal["done", "skipped"], str]:
    task.folder.mkdir()
    (task.folder / "out.txt").write_text(task.slide.name)
    return "done", task.label


# -- shards ----------------------------------------------------------------------------------------------------------


def test_shards_partition_the_items() -> None:
    items = [f"slide_{i}.svs" for i in range(10)]
    parts = [shard_items(items, Shard(k, 3)) for k in range(3)]
    assert sorted(item for part in parts for item in part) == sorted(items)
    assert parts[0] == ["slide_0.svs", "slide_3.svs", "slide_6.svs", "slide_9.svs"]


def test_no_shard_means_everything() -> None:
    assert shard_items(["a", "b"], None) == ["a", "b"]


def test_parse_shard_reads_k_over_n() -> None:
    assert parse_shard("2/8") == Shard(2, 8)


@pytest.mark.parametrize("text", ["8/8", "1", "a/b", "-1/2", "1/0"])
def test_parse_shard_refuses_bad_values_with_an_example(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--shard 0/4"):
        parse_shard(text)


def test_the_shard_asked_for_wins_over_torchrun() -> None:
    under_torchrun = ProcessPlace(rank=1, local_rank=1, world_size=4)
    assert resolve_shard(None, under_torchrun) == Shard(1, 4)
    assert resolve_shard("0/2", under_torchrun) == Shard(0, 2)
    assert resolve_shard(None, ProcessPlace()) is None


# -- folder names ----------------------------------------------------------------------------------------------------


def test_stems_name_folders_and_collisions_get_their_suffix() -> None:
    names, clashes = output_folder_names([Path("x/a.svs"), Path("x/a.tiff"), Path("x/b.svs")])
    assert names == {Path("x/a.svs"): "a_svs", Path("x/a.tiff"): "a_tiff", Path("x/b.svs"): "b"} and not clashes


def test_one_file_name_in_two_folders_fails_the_later_slide_only() -> None:
    names, clashes = output_folder_names([Path("x/a.svs"), Path("y/a.svs")])
    assert names == {Path("x/a.svs"): "a"}
    assert "y/a.svs: has the same file name as x/a.svs" in str(clashes[Path("y/a.svs")])


# -- the runner ------------------------------------------------------------------------------------------------------


def test_every_slide_gets_its_folder_and_one_outcome(tmp_path: Path) -> None:
    _slides(tmp_path / "in", "b.svs", "a.tiff", "a.svs")
    seen: list[SlideOutcome[str]] = []
    report = run_cohort([tmp_path / "in"], tmp_path / "out", _record, on_outcome=seen.append)
    assert [(o.slide.name, o.folder.name if o.folder else None, o.result) for o in report.outcomes] == [
        ("a.svs", "a_svs", "[1/3] a.svs"),
        ("a.tiff", "a_tiff", "[2/3] a.tiff"),
        ("b.svs", "b", "[3/3] b.svs"),
    ]
    assert seen == list(report.outcomes) and not report.failed
    assert (tmp_path / "out" / "a_tiff" / "out.txt").read_text() == "a.tiff"


def test_a_failing_slide_stops_none_of_the_others(tmp_path: Path) -> None:
    good, bad = _slides(tmp_path, "good.svs", "bad.svs")
    recorded: list[str] = []

    def work(task: SlideTask) -> tuple[Literal["done", "skipped"], str]:
        if task.slide == bad:
            raise NoTissueError(task.slide, "no tissue found", "Check the slide.")
        return "done", "ok"

    report = run_cohort([bad, good], tmp_path / "out", work, on_failure=lambda task, message: recorded.append(message))
    (failed,) = report.failed
    assert failed.slide == bad and failed.status == "failed" and failed.error == recorded[0]
    assert failed.error.startswith(f"{bad}: no tissue found")
    assert [o.result for o in report.succeeded] == ["ok"]


def test_errors_that_do_not_name_the_slide_get_its_path(tmp_path: Path) -> None:
    (slide,) = _slides(tmp_path, "s.svs")

    def work(task: SlideTask) -> tuple[Literal["done", "skipped"], str]:
        raise ConfigError("overlap must divide the tile")

    (outcome,) = run_cohort([slide], tmp_path / "out", work).outcomes
    assert outcome.error == f"{slide}: overlap must divide the tile"


def test_inputs_naming_no_slide_are_reported_by_shard_0_only(tmp_path: Path) -> None:
    _slides(tmp_path / "in", "a.svs", "b.svs")
    inputs = [tmp_path / "in", tmp_path / "missing.svs"]
    first = run_cohort(inputs, tmp_path / "out", _record, shard=Shard(0, 2))
    second = run_cohort(inputs, tmp_path / "out", _record, shard="1/2")
    assert [(o.slide.name, o.status) for o in first.outcomes] == [("missing.svs", "failed"), ("a.svs", "done")]
    assert [(o.slide.name, o.status) for o in second.outcomes] == [("b.svs", "done")]
    assert "missing.svs: does not exist" in (first.failed[0].error or "")


def test_shards_agree_on_folder_names(tmp_path: Path) -> None:
    one, two = _slides(tmp_path / "in", "a.svs", "a.tiff")
    second = run_cohort([one, two], tmp_path / "out", _record, shard=Shard(1, 2))
    assert [o.folder.name for o in second.outcomes if o.folder] == ["a_tiff"]  # named over the whole cohort


def test_a_name_clash_fails_one_slide_and_writes_nothing_for_it(tmp_path: Path) -> None:
    (one,) = _slides(tmp_path / "x", "a.svs")
    (two,) = _slides(tmp_path / "y", "a.svs")
    report = run_cohort([one, two], tmp_path / "out", _record)
    assert [o.status for o in report.outcomes] == ["done", "failed"]
    assert report.outcomes[1].folder is None and "Rename one" in (report.outcomes[1].error or "")
    assert (tmp_path / "out" / "a" / "out.txt").read_text() == "a.svs"


def test_no_inputs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no slides given"):
        run_cohort([], tmp_path / "out", _record)


def test_an_unwritable_output_stops_before_any_slide(tmp_path: Path) -> None:
    (slide,) = _slides(tmp_path, "s.svs")
    (tmp_path / "file").write_text("a file where the output folder should go")
    called: list[SlideTask] = []
    with pytest.raises(PathError, match=r"file: is a file, not a folder"):
        run_cohort([slide], tmp_path / "file", lambda task: (called.append(task), ("done", None))[1])
    assert not called


def test_under_torchrun_each_process_takes_its_rank_as_its_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _slides(tmp_path / "in", "a.svs", "b.svs", "c.svs")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    report = run_cohort([tmp_path / "in"], tmp_path / "out", _record)  # a Python caller, no --shard
    assert report.shard == Shard(1, 2) and [o.slide.name for o in report.outcomes] == ["b.svs"]
