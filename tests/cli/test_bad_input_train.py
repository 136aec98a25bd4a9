"""``histo-daen train``: its whole bad-input contract (numbers, workers, divergence, paths read from files).

Dataset layout problems are in ``tests/data``; resume refusals in ``test_train.py``. Each case here: the input, the
one line the user sees, the exit code, and what is on disk afterwards.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from histo_daen.config.schema import TileConfig
from histo_daen.data.synthetic_dataset import write_synthetic_luad
from histo_daen.data.synthetic_slide import SyntheticSlide
from histo_daen.models.checkpoint import load_model
from histo_daen.tiling.folder import tile_slide
from histo_daen.training import loop
from histo_daen.training.objective import LossTerms

TINY = [
    "--backbone", "resnet18", "--batch-size", "4", "--workers", "0", "--device", "cpu",
    "model.width=0.25", "model.input_size=64", "augment.colour=none",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad_train") / "LUAD-synth"
    return write_synthetic_luad(root, n_train=8, n_val=0, n_test=0, seed=2, patch_size=64, workers=0).root


def _train(invoke: Callable[..., Any], dataset: Path, output: Path, *extra: str) -> Any:
    return invoke("train", "--data-root", dataset, "-o", output, *TINY, *extra)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["--lr", "nan"], "Error: options: optim: lr must be a finite number, got nan"),
        (["optim.lr=nan"], "Error: options: optim: lr must be a finite number, got nan"),
        (["optim.lr=.inf"], "Error: options: optim: lr must be a finite number, got inf"),
        (["--lr", "100"], "Error: options: optim: lr must be in (0, 10], got 100"),
        (["optim.momentum=1.5"], "Error: options: optim: momentum must be in [0, 0.999], got 1.5"),
        (["loss.rvmin_weight=nan"], "Error: options: loss: rvmin_weight must be a finite number, got nan"),
        (["--seed", "-1"], "Error: options: seed must be in [0, 4294967295], got -1"),
    ],
)
def test_numbers_that_are_not_finite_or_absurd_are_refused(
    invoke: Callable[..., Any], dataset: Path, tmp_path: Path, given: list[str], message: str
) -> None:
    outcome = _train(invoke, dataset, tmp_path / "run", *given)
    assert outcome.code == 1
    assert outcome.error == message
    assert not (tmp_path / "run").exists()


def test_a_nan_learning_rate_in_a_yaml_file_is_refused_naming_the_file(
    invoke: Callable[..., Any], dataset: Path, tmp_path: Path
) -> None:
    config = tmp_path / "nan.yaml"
    config.write_text("optim:\n  lr: .nan\n")
    outcome = _train(invoke, dataset, tmp_path / "run", "--config", config)
    assert outcome.code == 1
    assert outcome.error == f"Error: {config} + options: optim: lr must be a finite number, got nan"
    assert not (tmp_path / "run").exists()


def test_more_loader_workers_than_the_machine_can_run_are_refused_before_any_starts(
    invoke: Callable[..., Any], dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_loader(*args: object, **kwargs: object) -> None:
        raise AssertionError("a data loader was started")

    monkeypatch.setattr(loop, "_loader", no_loader)
    outcome = invoke("train", "--data-root", dataset, "-o", tmp_path / "run", *TINY, "--workers", "100000")
    assert outcome.code == 1
    assert outcome.error.startswith(
        "Error: data.workers (--workers): 100000 worker processes are more than this machine can run ("
    )
    assert not (tmp_path / "run").exists()


def test_a_loss_that_overflows_stops_at_the_first_step_without_a_checkpoint(
    invoke: Callable[..., Any], dataset: Path, tmp_path: Path
) -> None:
    outcome = _train(invoke, dataset, tmp_path / "run", "loss.classification_weight=1e30")
    assert outcome.code == 1
    line = outcome.error
    assert line.startswith("Error: training diverged at step 1: the gradients are not finite (norm inf")
    assert "stopped before applying it. Likely cause: a learning rate too high" in line
    assert "No last.pt was written before it." in line
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml"]


def test_divergence_after_a_checkpoint_keeps_the_last_good_one(
    invoke: Callable[..., Any], dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loss that turns NaN at step 3 (as broken data would): last.pt keeps step 2, finite and loadable."""
    real_objective = loop._objective
    calls = []

    def nan_from_step_3(*args: Any, **kwargs: Any) -> LossTerms:
        calls.append(1)
        terms = real_objective(*args, **kwargs)
        if len(calls) < 3:
            return terms
        return LossTerms(total=terms.total * float("nan"), terms=terms.terms)

    monkeypatch.setattr(loop, "_objective", nan_from_step_3)
    two_epochs = ["--batch-size", "2", "--epochs", "2", "checkpoint_every=1"]
    outcome = _train(invoke, dataset, tmp_path / "run", *two_epochs)
    assert outcome.code == 1
    assert outcome.error.startswith("Error: training diverged at step 3: the loss is not finite (loss nan)")
    assert "last.pt still holds step 2, the last good checkpoint." in outcome.error
    loaded = load_model(tmp_path / "run" / "last.pt")
    assert loaded.state["step"] == 2
    assert all(torch.isfinite(value).all() for value in loaded.model.state_dict().values() if value.is_floating_point())


@pytest.mark.parametrize("case", ["under_a_file", "unwritable", "a_file"])
def test_an_output_folder_that_cannot_be_used_is_one_error_and_changes_nothing(
    invoke: Callable[..., Any],
    bad_output: Callable[..., Any],
    disk_state: Callable[..., Any],
    dataset: Path,
    tmp_path: Path,
    case: str,
) -> None:
    bad = bad_output(case, "run")
    before = disk_state(tmp_path)
    outcome = _train(invoke, dataset, bad.path)
    assert outcome.code == 1 and bad.words in outcome.error
    assert disk_state(tmp_path) == before


def test_a_folder_that_is_not_empty_is_refused(invoke: Callable[..., Any], dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    outcome = _train(invoke, dataset, tmp_path / "run")
    assert outcome.code == 1
    assert outcome.error == (
        f"Error: {tmp_path / 'run'}: is not empty. Pass --resume to continue it, --overwrite to start again, or "
        "choose another -o folder."
    )
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["notes.txt"]


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(
    invoke: Callable[..., Any], dataset: Path, tmp_path: Path
) -> None:
    assert _train(invoke, dataset, tmp_path / "run", "--max-steps", "1").code == 0
    before = (tmp_path / "run" / "last.pt").read_bytes()
    outcome = invoke("train", "--data-root", tmp_path, "-o", tmp_path / "run", *TINY, "--overwrite")  # no dataset
    assert outcome.code == 1 and outcome.error.startswith(f"Error: {tmp_path}: ")
    assert (tmp_path / "run" / "last.pt").read_bytes() == before  # --overwrite deletes only once the run starts


@pytest.fixture(scope="module")
def tiled(tiny_slide: SyntheticSlide, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("bad_train_tiles") / "tiles"
    tile_slide(tiny_slide.path, output / "tiny", TileConfig(target_mpp=2.0, tile_size=64), workers=0)
    return output


def _manifest_rows(root: Path) -> list[list[str]]:
    with open(root / "tiny" / "manifest.csv", newline="") as handle:
        return list(csv.reader(handle))


def _write_rows(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def _train_tiles(invoke: Callable[..., Any], root: Path, labels: Path, output: Path, *extra: str) -> Any:
    return invoke(
        "train", "--dataset", "tiles", "--data-root", root, "-o", output, *TINY, "--batch-size", "1",
        "--max-steps", "1", f"data.labels_csv={labels}", *extra,
    )  # fmt: skip


def test_paths_leading_out_of_the_dataset_are_refused_never_read(
    invoke: Callable[..., Any], tiled: Path, tmp_path: Path
) -> None:
    root = tmp_path / "tiles"
    shutil.copytree(tiled, root)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    rows = _manifest_rows(root)
    tile = rows[3][10]
    shutil.copy(root / "tiny" / tile, outside / "x.png")
    rows[1][10] = "../../elsewhere/x.png"  # a manifest row climbing out of its slide folder
    rows[2][10] = str(outside / "x.png")  # an absolute manifest row
    _write_rows(root / "tiny" / "manifest.csv", rows)
    os.symlink(outside, root / "tiny" / "tiles" / "link")
    labels = _write_rows(
        tmp_path / "labels.csv",
        [
            ["path", "TE", "NEC", "LYM", "TAS"],
            ["../elsewhere/x.png", "1", "0", "0", "0"],  # a label row climbing out of data.root
            [str(outside / "x.png"), "1", "0", "0", "0"],  # an absolute label row
            ["tiny/tiles/link/x.png", "1", "0", "0", "0"],  # a symlink out
            [f"tiny/{tile}", "1", "0", "0", "0"],  # a good row
        ],
    )
    outcome = _train_tiles(invoke, root, labels, tmp_path / "run")
    assert outcome.code == 1
    line = outcome.error
    assert line.startswith(f"Error: {root}: 5 problems with the tiles and the labels of labels.csv: 5 paths leading")
    assert "(a '..' step, in tiny/manifest.csv)" in line and "(an absolute path, in tiny/manifest.csv)" in line
    assert "Tile the slides again (histo-daen tile --overwrite)" in line and "Fix the rows of" in line
    assert not (tmp_path / "run").exists()


def test_data_verify_refuses_a_tile_changed_since_tiling(
    invoke: Callable[..., Any], tiled: Path, tmp_path: Path
) -> None:
    root = tmp_path / "tiles"
    shutil.copytree(tiled, root)
    tile = _manifest_rows(root)[1][10]
    with open(root / "tiny" / tile, "ab") as handle:
        handle.write(b"\0")  # still a readable PNG: only the size and hash give it away
    labels = _write_rows(
        tmp_path / "labels.csv", [["path", "TE", "NEC", "LYM", "TAS"], [f"tiny/{tile}", "1", "0", "0", "0"]]
    )
    outcome = _train_tiles(invoke, root, labels, tmp_path / "run", "data.verify=true")
    assert outcome.code == 1
    assert outcome.error == (
        f"Error: {root}: 1 problem with the tiles and the labels of labels.csv: 1 tile whose size or SHA-256 differs "
        f"from its manifest: tiny/{tile}. Tile the slides again (histo-daen tile --overwrite) for the manifest and "
        "tile problems."
    )
    assert not (tmp_path / "run").exists()
    assert _train_tiles(invoke, root, labels, tmp_path / "unverified").code == 0  # without data.verify it trains


def test_ctrl_c_then_resume_gives_the_same_weights_and_metrics_as_an_uninterrupted_run(
    invoke: Callable[..., Any], dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted at step 6, between the checkpoint of step 4 and the log line of step 6: nothing differs."""
    run = ["--batch-size", "2", "--epochs", "2", "checkpoint_every=2", "log_every=3"]
    assert _train(invoke, dataset, tmp_path / "whole", *run).code == 0

    real_check = loop._stop_if_diverged

    def ctrl_c_at_step_6(step: int, *args: Any, **kwargs: Any) -> None:
        if step == 6:
            raise KeyboardInterrupt
        real_check(step, *args, **kwargs)

    monkeypatch.setattr(loop, "_stop_if_diverged", ctrl_c_at_step_6)
    interrupted = _train(invoke, dataset, tmp_path / "cut", *run)
    assert interrupted.code == 130
    assert interrupted.stderr.splitlines()[-1].startswith("Interrupted by Ctrl-C: workers stopped;")
    assert load_model(tmp_path / "cut" / "last.pt").state["step"] == 4
    monkeypatch.setattr(loop, "_stop_if_diverged", real_check)
    assert _train(invoke, dataset, tmp_path / "cut", *run, "--resume").code == 0

    def losses(folder: Path) -> list[dict[str, Any]]:
        timing = ("images_per_second", "data_time_share")
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]

    assert [line["step"] for line in losses(tmp_path / "whole")] == [3, 6, 8]
    assert losses(tmp_path / "cut") == losses(tmp_path / "whole")
    whole = load_model(tmp_path / "whole" / "last.pt").model.state_dict()
    cut = load_model(tmp_path / "cut" / "last.pt").model.state_dict()
    assert all(torch.equal(whole[key], cut[key]) for key in whole)


@pytest.mark.slow
def test_sigterm_to_the_process_group_stops_training_with_loader_workers_in_one_line(
    dataset: Path, tmp_path: Path
) -> None:
    """What ``timeout`` and schedulers do: the signal reaches the command and its data-loader workers at once."""
    output = tmp_path / "run"
    command = ["train", "--data-root", str(dataset), "-o", str(output), *TINY, "--workers", "2", "--epochs", "1000"]
    with open(tmp_path / "stderr.txt", "w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", "from histo_daen.cli import main; main()", *command],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not (output / "metrics.jsonl").exists():
                assert child.poll() is None, "training ended before it could be interrupted"
                assert time.monotonic() < deadline, "no step was logged"
                time.sleep(0.05)
            os.killpg(child.pid, signal.SIGTERM)
            assert child.wait(timeout=60) == 143
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
    error = (tmp_path / "stderr.txt").read_text()
    assert error.splitlines()[-1].startswith("Interrupted by SIGTERM: workers stopped;")
    assert "Traceback" not in error  # was: "DataLoader worker ... killed by signal: Terminated", during and at exit
    assert load_model(output / "last.pt").state["step"] >= 1
