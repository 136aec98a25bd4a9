"""``histo-daen compare`` from the command line: the short summary, the three files, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from histo_daen.cli import cli

from histo_daen.evaluation.metrics import confusion_matrix, scores
from histo_daen.evaluation.report import write_metrics

CODES = ("TE", "NEC", "LYM", "TAS")


def _evaluation(folder: Path, method: str, prediction: list[int], split: str = "test") -> Path:
    folder.mkdir(parents=True)
    truth = np.array([[0, 1, 2, 3]])
    result = scores(confusion_matrix(truth, np.array([prediction])))
    record = {
        "method": method,
        "class_set": "luad",
        "classes": list(CODES),
        "scores": result.as_dict(CODES),
        "protocol": {"name": "mlps", "label_source": "predicted", "label_threshold": 0.25},
        "dataset": {"name": "luad", "split": split, "n_images": 1},
    }
    write_metrics(folder, record)
    return folder


@pytest.fixture
def evaluations(tmp_path: Path) -> list[Path]:
    return [
        _evaluation(tmp_path / "eval" / "daen", "daen", [0, 1, 2, 3]),
        _evaluation(tmp_path / "eval" / "seam", "seam", [0, 1, 3, 3]),
    ]


def test_compare_prints_each_method_and_writes_the_files(evaluations: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "compare"
    result = CliRunner().invoke(cli, ["compare", *map(str, evaluations), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "daen  luad test  mIoU 100.00" in result.stdout
    assert "seam  luad test  mIoU 62.50" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["comparison.csv", "comparison.md", "iou_by_class.png"]
    assert "published, not measured here" in (out / "comparison.md").read_text()


def test_no_published_leaves_the_paper_rows_out(evaluations: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "compare"
    result = CliRunner().invoke(cli, ["compare", *map(str, evaluations), "-o", str(out), "--no-published"])
    assert result.exit_code == 0, result.output
    assert "Table 6" not in (out / "comparison.csv").read_text()


def test_a_folder_that_is_not_an_evaluation_is_one_error_line(evaluations: list[Path], tmp_path: Path) -> None:
    stray = tmp_path / "notes"
    stray.mkdir()
    result = CliRunner().invoke(cli, ["compare", str(evaluations[0]), str(stray), "-o", str(tmp_path / "compare")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {stray / 'metrics.json'}: does not exist")
    assert "histo-daen evaluate" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "compare").exists()


def test_compare_needs_at_least_one_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["compare", "-o", str(tmp_path / "compare")])
    assert result.exit_code == 2  # usage error
    assert "Missing argument 'EVAL_DIRS...'" in result.output
