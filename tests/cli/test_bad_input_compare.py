"""``histo-daen compare``: its whole bad-input contract (evaluations that do not rank against each other).

Missing metrics and mixed class sets are in ``test_compare.py``. Each case here: the input, the one line the user
sees, the exit code, and what is on disk afterwards.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from histo_daen.evaluation.metrics import confusion_matrix, scores
from histo_daen.evaluation.report import write_metrics

CODES = ("TE", "NEC", "LYM", "TAS")


def _evaluation(folder: Path, *, dataset: str, split: str) -> Path:
    folder.mkdir(parents=True)
    truth = np.array([[0, 1, 2, 3]])
    write_metrics(
        folder,
        {
            "method": "daen",
            "class_set": "luad",
            "classes": list(CODES),
            "scores": scores(confusion_matrix(truth, truth)).as_dict(CODES),
            "protocol": {"name": "mlps", "label_source": "predicted", "label_threshold": 0.25},
            "dataset": {"name": dataset, "split": split, "n_images": 1},
        },
    )
    return folder


def test_a_val_and_a_test_evaluation_are_refused_side_by_side(invoke: Callable[..., Any], tmp_path: Path) -> None:
    val = _evaluation(tmp_path / "eval" / "val", dataset="luad", split="val")
    test = _evaluation(tmp_path / "eval" / "test", dataset="luad", split="test")
    outcome = invoke("compare", val, test, "-o", tmp_path / "compare")
    assert outcome.code == 1
    assert outcome.error == (
        f"Error: the evaluations scored different datasets or splits ({val}: luad val, {test}: luad test), whose "
        "scores do not rank against each other; compare evaluations of one split, or pass --allow-mixed to put them "
        "side by side anyway"
    )
    assert not (tmp_path / "compare").exists()


def test_allow_mixed_shows_dataset_and_split_on_every_row_and_says_they_do_not_rank(
    invoke: Callable[..., Any], tmp_path: Path
) -> None:
    val = _evaluation(tmp_path / "eval" / "val", dataset="luad", split="val")
    test = _evaluation(tmp_path / "eval" / "test", dataset="luad", split="test")
    outcome = invoke("compare", val, test, "-o", tmp_path / "compare", "--allow-mixed")
    assert outcome.code == 0
    assert outcome.stdout.splitlines()[:2] == [
        "val (daen)   luad val   mIoU 100.00",
        "test (daen)  luad test  mIoU 100.00",
    ]
    markdown = (tmp_path / "compare" / "comparison.md").read_text()
    assert "scored different datasets or splits" in markdown and "do not rank against each other" in markdown
    assert "| val (daen) | measured | luad | val |" in markdown
    with open(tmp_path / "compare" / "comparison.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["dataset"], row["split"]) for row in rows[:2]] == [("luad", "val"), ("luad", "test")]


@pytest.mark.parametrize("case", ["under_a_file", "unwritable", "a_file", "not_empty"])
def test_an_output_folder_that_cannot_be_used_is_one_error_and_changes_nothing(
    invoke: Callable[..., Any],
    bad_output: Callable[..., Any],
    disk_state: Callable[..., Any],
    tmp_path: Path,
    case: str,
) -> None:
    evaluation = _evaluation(tmp_path / "eval" / "daen", dataset="luad", split="test")
    bad = bad_output(case, "compare")
    before = disk_state(tmp_path)
    outcome = invoke("compare", evaluation, "-o", bad.path)
    assert outcome.code == 1 and bad.words in outcome.error
    assert disk_state(tmp_path) == before


def test_an_output_that_is_one_of_the_evaluations_is_refused_even_with_overwrite(
    invoke: Callable[..., Any], tmp_path: Path
) -> None:
    evaluation = _evaluation(tmp_path / "eval" / "daen", dataset="luad", split="test")
    outcome = invoke("compare", evaluation, "-o", evaluation, "--overwrite")
    assert outcome.code == 1
    assert (
        outcome.error == f"Error: {evaluation}: is, or holds, the input {evaluation}. Write the output somewhere else."
    )
    assert (evaluation / "metrics.json").is_file()


def test_evaluations_of_different_datasets_are_refused(invoke: Callable[..., Any], tmp_path: Path) -> None:
    luad = _evaluation(tmp_path / "a" / "daen", dataset="luad", split="test")
    other = _evaluation(tmp_path / "b" / "daen", dataset="luad-synthetic", split="test")
    outcome = invoke("compare", luad, other, "-o", tmp_path / "compare")
    assert outcome.code == 1
    assert f"({luad}: luad test, {other}: luad-synthetic test)" in outcome.error
    assert not (tmp_path / "compare").exists()
