from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from histo_daen.cli import cli

from histo_daen.data.synthetic_dataset import write_synthetic_luad

TINY = [
    "--backbone", "resnet18", "--batch-size", "4", "--epochs", "1", "--workers", "0", "--device", "cpu",
    "model.width=0.25", "model.input_size=64", "augment.colour=none",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # two xdist workers x default threads oversubscribe the cores (tests/training)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli_train") / "LUAD-synth"
    return write_synthetic_luad(root, n_train=8, n_val=0, n_test=0, seed=2, patch_size=64, workers=1).root


def test_train_writes_a_run_and_reports_it(dataset: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["train", "--data-root", str(dataset), "-o", str(tmp_path / "run"), *TINY])
    assert result.exit_code == 0, result.output
    assert "Trained 2/2 steps (seam objective, loss " in result.stdout
    assert str(tmp_path / "run" / "last.pt") in result.stdout
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"last.pt", "config.yaml", "metrics.jsonl"}
    assert "NO PRETRAINED WEIGHTS" in result.stderr and "starts from random weights" in result.stderr
    assert "training recipe 'scratch'" in result.stderr


def test_options_and_overrides_end_up_in_the_stored_config(dataset: Path, tmp_path: Path) -> None:
    args = ["train", "--data-root", str(dataset), "-o", str(tmp_path / "run"), "--variant", "cam", "--lr", "0.05"]
    result = CliRunner().invoke(cli, [*args, *TINY, "optim.momentum=0.9", "seed=4", "log_every=1"])
    assert result.exit_code == 0, result.output
    assert "(classification objective" in result.stdout
    stored = (tmp_path / "run" / "config.yaml").read_text()
    for line in ("variant: cam", "lr: 0.05", "momentum: 0.9", "seed: 4", "batch_size: 4"):
        assert line in stored
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["lr"] for m in metrics] == pytest.approx([0.05, 0.05 * 0.5**0.9])  # poly over two steps


def test_existing_run_needs_resume_or_overwrite(dataset: Path, tmp_path: Path) -> None:
    args = ["train", "--data-root", str(dataset), "-o", str(tmp_path / "run"), *TINY]
    assert CliRunner().invoke(cli, args).exit_code == 0
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1
    assert "Error: " in refused.output and "holds a training run. Pass --resume" in refused.output
    assert "Traceback" not in refused.output
    resumed = CliRunner().invoke(cli, [*args, "--resume"])
    assert resumed.exit_code == 0 and "Trained 2/2 steps" in resumed.stdout


def test_bad_dataset_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "train" / "x-[1 1 1].png").write_bytes(b"")
    result = CliRunner().invoke(cli, ["train", "--data-root", str(tmp_path / "data"), "-o", str(tmp_path / "r"), *TINY])
    assert result.exit_code == 1
    assert "Error: " in result.output and "1 malformed label (not 4 digits of 0 or 1): train/x-[1 1 1].png" in (
        result.output
    )
    assert "Traceback" not in result.output


def test_unknown_config_key_is_refused_with_the_nearest_one(dataset: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["train", "--data-root", str(dataset), "-o", str(tmp_path / "r"), *TINY, "optim.learning_rate=0.1"]
    )
    assert result.exit_code == 1 and "unknown key 'learning_rate' for OptimConfig" in result.output


def test_help_teaches_with_examples() -> None:
    result = CliRunner().invoke(cli, ["train", "--help"])
    assert result.exit_code == 0
    assert "histo-daen train --dataset luad --data-root LUAD-HistoSeg/ --variant daen" in result.output
    assert "--resume" in result.output and "torchrun" in result.output
