"""``histo-daen evaluate``: its whole bad-input contract (checkpoints that cannot score the dataset, numbers, workers).

Missing or corrupt checkpoints and datasets are in ``test_evaluate.py``. Each case here: the input, the one line the
user sees, the exit code, and what is on disk afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from histo_daen.config.schema import ModelConfig
from histo_daen.data.synthetic_dataset import write_synthetic_luad
from histo_daen.models import build_model, checkpoint_state, save_checkpoint

TINY_MODEL = ModelConfig(variant="seam", backbone="resnet18", width=0.25, input_size=64)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad_evaluate") / "LUAD-synth"
    return write_synthetic_luad(root, n_train=0, n_val=2, n_test=2, seed=5, patch_size=64, workers=0).root


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a diverged run of an older histo-daen left: every weight NaN (today's save_checkpoint refuses it)."""
    torch.manual_seed(0)
    model = build_model(TINY_MODEL)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    path = tmp_path_factory.mktemp("nan_checkpoint") / "last.pt"
    state = checkpoint_state(model)
    torch.save({**state, "format_version": 1, "histo_daen_version": "0"}, path)  # around the refusal, on purpose
    return path


def test_a_checkpoint_with_nan_weights_is_refused_before_any_output(
    invoke: Callable[..., Any], nan_checkpoint: Path, dataset: Path, tmp_path: Path
) -> None:
    outcome = invoke("evaluate", "--checkpoint", nan_checkpoint, "--data-root", dataset, "-o", tmp_path / "eval")
    assert outcome.code == 1
    assert outcome.error.startswith(f"Error: {nan_checkpoint}: holds weights with NaN or inf (")
    assert outcome.error.endswith(
        "the run that wrote it diverged. Use an earlier checkpoint, or train again with a lower learning rate."
    )
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("n_classes", [3, 5])
def test_a_checkpoint_of_another_class_count_is_refused(
    invoke: Callable[..., Any], dataset: Path, tmp_path: Path, n_classes: int
) -> None:
    model = build_model(TINY_MODEL, num_classes=n_classes)
    codes = ["A", "B", "C", "D", "E"][:n_classes]
    checkpoint = save_checkpoint(tmp_path / "other.pt", checkpoint_state(model, classes=codes))
    outcome = invoke("evaluate", "--checkpoint", checkpoint, "--data-root", dataset, "-o", tmp_path / "eval")
    assert outcome.code == 1
    assert outcome.error == (
        f"Error: {checkpoint}: predicts {n_classes} classes ({', '.join(codes)}), but the LUAD-HistoSeg masks have 4 "
        "(TE, NEC, LYM, TAS). Evaluate a checkpoint trained on this dataset's classes."
    )
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("inference.scales=[nan]", "inference: scales must be a finite number, got nan"),
        (
            "inference.scales=[1000.0]",
            "inference: scales must be a non-empty list of factors in [0.1, 4], got [1000.0]",
        ),
        ("batch_size=100000", "batch_size must be in [1, 4096], got 100000"),
        (
            "inference.label_threshold=nan",
            "inference: label_threshold must be a finite number, got nan",
        ),
    ],
)
def test_numbers_that_are_not_finite_or_absurd_are_refused(
    invoke: Callable[..., Any], segment_checkpoint: Path, dataset: Path, tmp_path: Path, override: str, message: str
) -> None:
    outcome = invoke(
        "evaluate", "--checkpoint", segment_checkpoint, "--data-root", dataset, "-o", tmp_path / "eval", override
    )
    assert outcome.code == 1
    assert outcome.error.startswith("Error: ") and outcome.error.endswith(f": {message}")
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("case", ["under_a_file", "unwritable", "a_file", "not_empty"])
def test_an_output_folder_that_cannot_be_used_is_one_error_and_changes_nothing(
    invoke: Callable[..., Any],
    bad_output: Callable[..., Any],
    disk_state: Callable[..., Any],
    segment_checkpoint: Path,
    dataset: Path,
    tmp_path: Path,
    case: str,
) -> None:
    bad = bad_output(case, "eval")
    before = disk_state(tmp_path)
    outcome = invoke("evaluate", "--checkpoint", segment_checkpoint, "--data-root", dataset, "-o", bad.path)
    assert outcome.code == 1 and bad.words in outcome.error
    assert disk_state(tmp_path) == before


def test_an_output_that_holds_the_dataset_is_refused_even_with_overwrite(
    invoke: Callable[..., Any], segment_checkpoint: Path, dataset: Path
) -> None:
    outcome = invoke(
        "evaluate", "--checkpoint", segment_checkpoint, "--data-root", dataset, "-o", dataset.parent, "--overwrite"
    )
    assert outcome.code == 1
    assert (
        outcome.error == f"Error: {dataset.parent}: is, or holds, the input {dataset}. Write the output somewhere else."
    )
    assert (dataset / "test").is_dir()


def test_more_loader_workers_than_the_machine_can_run_are_refused(
    invoke: Callable[..., Any], segment_checkpoint: Path, dataset: Path, tmp_path: Path
) -> None:
    outcome = invoke(
        "evaluate", "--checkpoint", segment_checkpoint, "--data-root", dataset, "-o", tmp_path / "eval",
        "workers=100000",
    )  # fmt: skip
    assert outcome.code == 1
    assert outcome.error.startswith("Error: workers: 100000 worker processes are more than this machine can run (")
    assert not (tmp_path / "eval").exists()


def test_a_pickle_that_safe_loading_refuses_is_named_by_the_refused_object(
    invoke: Callable[..., Any], dataset: Path, tmp_path: Path
) -> None:
    import argparse

    checkpoint = tmp_path / "argparse.pt"
    torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": {"w": torch.zeros(2)}}, checkpoint)
    outcome = invoke("evaluate", "--checkpoint", checkpoint, "--data-root", dataset, "-o", tmp_path / "eval")
    assert outcome.code == 1
    assert outcome.error.startswith(
        f"Error: {checkpoint}: holds Python objects (argparse.Namespace) that safe loading (torch.load with "
        "weights_only=True) refuses."
    )
    assert not (tmp_path / "eval").exists()
