"""The comparison table and chart from evaluation records; published rows always marked as not measured here."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histo_daen.errors import ConfigError, OutputExistsError, PathError
from histo_daen.evaluation.compare import PUBLISHED_LUAD, compare_evaluations
from histo_daen.evaluation.metrics import confusion_matrix, scores
from histo_daen.evaluation.report import write_metrics

CODES = ("TE", "NEC", "LYM", "TAS")


def _evaluation(
    folder: Path, method: str, truth: np.ndarray, prediction: np.ndarray, class_set: str = "luad", split: str = "test"
) -> Path:
    folder.mkdir(parents=True)
    result = scores(confusion_matrix(truth, prediction))
    write_metrics(
        folder,
        {
            "method": method,
            "class_set": class_set,
            "classes": list(CODES),
            "scores": result.as_dict(CODES),
            "protocol": {"name": "mlps", "label_source": "predicted", "label_threshold": 0.25, "cam_source": "raw"},
            "dataset": {"name": "luad", "split": split, "n_images": 1},
        },
    )
    return folder


@pytest.fixture
def two_evaluations(tmp_path: Path) -> list[Path]:
    truth = np.array([[0, 1, 2, 3]], dtype=np.uint8)
    perfect = _evaluation(tmp_path / "eval" / "daen", "daen", truth, truth)
    # TE and NEC right, LYM predicted as TAS: TE 1, NEC 1, LYM 0, TAS 1/2 -> mIoU 62.5 %
    partly = _evaluation(tmp_path / "eval" / "seam", "seam", truth, np.array([[0, 1, 3, 3]], dtype=np.uint8))
    return [perfect, partly]


def test_compare_writes_measured_and_published_rows(two_evaluations: list[Path], tmp_path: Path) -> None:
    result = compare_evaluations(two_evaluations, tmp_path / "compare")
    with result.csv.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["method"] for row in table[:2]] == ["daen", "seam"]
    assert table[1]["iou_LYM"] == "0.0" and table[1]["iou_TAS"] == "50.0" and table[1]["miou"] == "62.5"
    assert {row["source"] for row in table[:2]} == {"measured"}
    published = table[2:]
    assert len(published) == len(PUBLISHED_LUAD)
    assert {row["source"] for row in published} == {"published (not measured here)"}
    daen_paper = next(row for row in published if row["method"] == "DAEN")
    assert daen_paper["miou"] == "51.9" and "Table 6" in daen_paper["reference"]


def test_compare_markdown_flags_published_numbers_and_their_protocol(
    two_evaluations: list[Path], tmp_path: Path
) -> None:
    result = compare_evaluations(two_evaluations, tmp_path / "compare")
    text = result.markdown.read_text()
    assert "| seam | measured | luad | test | 100.0 | 100.0 | 0.0 | 50.0 | **62.5** |" in text
    assert "| DAEN | **published, not measured here** [a] | luad | ? | 48.2 | 51.1 | 49.4 | 58.7 | **51.9** |" in text
    assert "Not directly comparable" in text  # the Table 6 caveat
    assert "MLPS protocol" in text


def test_compare_draws_a_bar_chart(two_evaluations: list[Path], tmp_path: Path) -> None:
    result = compare_evaluations(two_evaluations, tmp_path / "compare")
    with Image.open(result.chart) as chart:
        assert chart.format == "PNG"
        assert chart.width > 600 and chart.height > 400


def test_compare_without_published_rows(two_evaluations: list[Path], tmp_path: Path) -> None:
    result = compare_evaluations(two_evaluations, tmp_path / "compare", include_published=False)
    assert len(result.rows) == 2
    assert "not measured here" not in result.csv.read_text()


def test_published_rows_only_for_luad(tmp_path: Path) -> None:
    truth = np.zeros((1, 2), dtype=np.uint8)
    folder = _evaluation(tmp_path / "bcss_run", "daen", truth, truth, class_set="bcss")
    result = compare_evaluations([folder], tmp_path / "compare")
    assert [row.source for row in result.rows] == ["measured"]


def test_repeated_folder_names_are_told_apart_by_parent(tmp_path: Path) -> None:
    truth = np.zeros((1, 2), dtype=np.uint8)
    first = _evaluation(tmp_path / "seed0" / "daen", "daen", truth, truth)
    second = _evaluation(tmp_path / "seed1" / "daen", "daen", truth, truth)
    result = compare_evaluations([first, second], tmp_path / "compare", include_published=False)
    assert [row.name for row in result.rows] == ["seed0/daen (daen)", "seed1/daen (daen)"]


def test_existing_output_needs_overwrite(two_evaluations: list[Path], tmp_path: Path) -> None:
    target = tmp_path / "compare"
    compare_evaluations(two_evaluations, target)
    with pytest.raises(OutputExistsError, match=r"compare: exists and is not empty\. Pass --overwrite"):
        compare_evaluations(two_evaluations, target)
    compare_evaluations(two_evaluations[:1], target, overwrite=True, include_published=False)
    assert "seam" not in (target / "comparison.csv").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compare", "eval"]  # no staging folder left behind


def test_folder_without_metrics_is_refused(tmp_path: Path) -> None:
    (tmp_path / "not_an_eval").mkdir()
    with pytest.raises(PathError, match=r"not_an_eval/metrics\.json: does not exist .*'histo-daen evaluate"):
        compare_evaluations([tmp_path / "not_an_eval"], tmp_path / "compare")
    assert not (tmp_path / "compare").exists()


def test_corrupt_metrics_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "metrics.json").write_text("{ not json")
    with pytest.raises(PathError, match=r"broken/metrics\.json: cannot be read as JSON"):
        compare_evaluations([folder], tmp_path / "compare")


def test_mixed_class_sets_are_refused(tmp_path: Path) -> None:
    truth = np.zeros((1, 2), dtype=np.uint8)
    luad = _evaluation(tmp_path / "a", "daen", truth, truth)
    bcss = _evaluation(tmp_path / "b", "daen", truth, truth, class_set="bcss")
    with pytest.raises(ConfigError, match="different class sets"):
        compare_evaluations([luad, bcss], tmp_path / "compare")
