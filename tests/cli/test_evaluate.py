"""``histo-daen evaluate`` from the command line: the table, the files, and one clear Error line per bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from histo_daen.cli import cli
from PIL import Image

from histo_daen.classes import LUAD
from histo_daen.data.masks import write_mask
from histo_daen.data.synthetic_dataset import write_synthetic_luad
from histo_daen.models import build_model, checkpoint_state, save_checkpoint

FAST = ("--batch-size", "2", "inference.scales=[1.0]", "inference.flip=false")


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_luad(
        tmp_path_factory.mktemp("data") / "LUAD", n_train=2, n_val=2, n_test=3, patch_size=64
    ).root


@pytest.fixture
def dataset(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy each test may break."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "LUAD"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model(variant="seam", backbone="resnet18", width=0.125)
    return save_checkpoint(tmp_path_factory.mktemp("run") / "last.pt", checkpoint_state(model, epoch=2, step=10))


def _evaluate(*args: str | Path) -> object:
    return CliRunner().invoke(cli, ["evaluate", *map(str, args)], catch_exceptions=False)


@pytest.mark.slow
def test_evaluate_prints_the_table_and_writes_the_folder(checkpoint: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = _evaluate("--checkpoint", checkpoint, "--data-root", dataset, "-o", out, "--save-masks", *FAST)
    assert result.exit_code == 0, result.output
    assert "seam on test (3 patches, predicted labels, refined CAMs):" in result.output
    assert "mIoU" in result.output and "FwIoU" in result.output
    assert f"Evaluation written to {out}" in result.output
    record = json.loads((out / "metrics.json").read_text())
    assert record["protocol"]["scales"] == [1.0] and record["protocol"]["flip"] is False
    assert len(list((out / "masks").glob("*.png"))) == 3
    assert (out / "confusion_matrix.png").is_file()


def test_options_reach_the_config(checkpoint: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = _evaluate(
        "--checkpoint",
        checkpoint,
        "--data-root",
        dataset,
        "-o",
        out,
        "--split",
        "val",
        "--label-source",
        "masks",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "metrics.json").read_text())
    assert record["dataset"]["split"] == "val" and record["protocol"]["label_source"] == "masks"
    assert record["image_labels"]["fraction_matching"] == 1.0  # labels from the masks match the masks


def _assert_one_error_line(result: object, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr  # progress bars may precede it on stderr, nothing else
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_corrupt_checkpoint(dataset: Path, checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "last.pt"
    broken.write_bytes(checkpoint.read_bytes()[:5000])
    result = _evaluate("--checkpoint", broken, "--data-root", dataset, "-o", tmp_path / "eval")
    _assert_one_error_line(result, f"{broken}: is truncated or corrupt", "Use an earlier checkpoint")
    assert not (tmp_path / "eval").exists()


def test_checkpoint_that_is_not_ours(dataset: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "model.pt"
    torch.save({"epoch": 3, "weights": torch.zeros(2)}, foreign)
    result = _evaluate("--checkpoint", foreign, "--data-root", dataset, "-o", tmp_path / "eval")
    _assert_one_error_line(result, f"{foreign}: is not a histo-daen checkpoint", "histo-daen train")


def test_data_root_without_masks_for_the_split(checkpoint: Path, dataset: Path, tmp_path: Path) -> None:
    shutil.rmtree(dataset / "test" / "mask")
    result = _evaluate("--checkpoint", checkpoint, "--data-root", dataset, "-o", tmp_path / "eval")
    _assert_one_error_line(result, str(dataset), "split folder without img/ and mask/", "test/mask")


def test_masks_of_the_wrong_size(checkpoint: Path, dataset: Path, tmp_path: Path) -> None:
    mask_path = sorted((dataset / "test" / "mask").glob("*.png"))[0]
    write_mask(mask_path, np.zeros((32, 48), dtype=np.uint8), LUAD)
    result = _evaluate("--checkpoint", checkpoint, "--data-root", dataset, "-o", tmp_path / "eval")
    _assert_one_error_line(
        result, "mask whose size differs from its image", f"test/mask/{mask_path.name} ((48, 32) vs (64, 64))"
    )


def test_empty_split(checkpoint: Path, dataset: Path, tmp_path: Path) -> None:
    for folder in ("img", "mask"):
        shutil.rmtree(dataset / "val" / folder)
        (dataset / "val" / folder).mkdir()
    result = _evaluate("--checkpoint", checkpoint, "--data-root", dataset, "--split", "val", "-o", tmp_path / "eval")
    _assert_one_error_line(result, "split folder without any .png patch", "Fix or remove these files")


def test_existing_output_needs_overwrite(checkpoint: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = _evaluate("--checkpoint", checkpoint, "--data-root", dataset, "-o", out)
    _assert_one_error_line(result, f"{out}: exists and is not empty", "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    result = _evaluate("--checkpoint", checkpoint, "--data-root", dataset, "-o", out, "--overwrite", *FAST)
    assert result.exit_code == 0, result.output
    assert not (out / "keep.txt").exists()


def test_help_teaches_with_an_example() -> None:
    result = CliRunner().invoke(cli, ["evaluate", "--help"])
    assert result.exit_code == 0
    assert "histo-daen evaluate --checkpoint runs/daen/last.pt --data-root LUAD-HistoSeg/" in result.output
    assert "--label-source [predicted|dataset|masks]" in result.output


def test_a_colour_mask_in_the_split_is_named(checkpoint: Path, dataset: Path, tmp_path: Path) -> None:
    mask_path = sorted((dataset / "test" / "mask").glob("*.png"))[1]
    Image.new("RGB", (64, 64), (255, 0, 0)).save(mask_path)
    result = _evaluate("--checkpoint", checkpoint, "--data-root", dataset, "-o", tmp_path / "eval")
    _assert_one_error_line(result, "mask that is a colour image, not class indices", mask_path.name)
