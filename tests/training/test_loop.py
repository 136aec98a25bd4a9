from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from histo_daen.config.load import dump_config, load_config
from histo_daen.config.schema import TileConfig, TrainConfig
from histo_daen.data.patch_dataset import PatchDataset
from histo_daen.data.registry import load_splits
from histo_daen.errors import CheckpointError, ConfigError, DatasetError, OutputExistsError
from histo_daen.models.checkpoint import load_model, read_checkpoint
from histo_daen.models.registry import build_model
from histo_daen.seeding import seed_everything
from histo_daen.tiling import tile_slide
from histo_daen.tiling.manifest import read_manifest
from histo_daen.training.affine import TwinParams, TwinTransform
from histo_daen.training.loop import resolve_objective, train
from histo_daen.training.objective import classification_objective, seam_objective
from histo_daen.training.recipe import resolve_recipe

RUNNER = Path(__file__).with_name("run_training.py")
REPO = Path(__file__).resolve().parents[2]


def _metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _objective_on_training_batch(model: torch.nn.Module, cfg: TrainConfig) -> float:
    """The run's objective on all training patches, dropout off: what a few steps on one batch must lower."""
    records = load_splits(cfg.data, ("train",))["train"]
    batch = [PatchDataset(records, n_classes=4)[i] for i in range(len(records))]
    images = torch.stack([item["image"] for item in batch])
    labels = torch.stack([item["label"] for item in batch])
    model.eval()
    with torch.no_grad():
        first = model(images)
        if resolve_objective(cfg, model) == "classification":
            return classification_objective(first, labels, cfg.loss).total.item()
        twin = TwinTransform(cfg.twin)
        params = TwinParams.identity(len(batch))
        second = model(twin.apply(images, params))
        terms = seam_objective(first, second, labels, image_hw=(64, 64), twin=twin, params=params, cfg=cfg.loss)
        return terms.total.item()


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["daen", "seam", "cm", "sm", "cam"])
def test_a_few_steps_of_each_variant_lower_its_objective(
    variant: str, tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    # One batch of all 8 patches, no augmentation: every step sees the same data, so the objective must fall.
    cfg = tiny_config(
        f"model.variant={variant}",
        "optim.batch_size=8",
        "optim.epochs=6",
        "augment.flips=false",
        "augment.rotations=false",
    )
    seed_everything(cfg.seed)
    before = _objective_on_training_batch(build_model(cfg.model), cfg)  # train() builds the same initial model
    result = train(cfg, output_dir=tmp_path / variant, device="cpu")
    after = _objective_on_training_batch(load_model(result.checkpoint).model, cfg)
    assert result.step == 6
    assert result.objective == ("classification" if variant == "cam" else "seam")
    assert after < 0.9 * before


def test_run_folder_holds_checkpoint_config_and_metrics(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    cfg = tiny_config("optim.epochs=2")
    result = train(cfg, output_dir=tmp_path / "run", device="cpu")
    assert (result.step, result.max_steps, result.epoch) == (4, 4, 2)
    # config.yaml records the run as trained: the recipe's fields that the config left open are filled in.
    resolved = resolve_recipe(cfg)[0]
    assert load_config(TrainConfig, tmp_path / "run" / "config.yaml") == resolved
    metrics = _metrics(tmp_path / "run")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert {"loss", "classification", "equivariant", "cross_equivariant", "rvmin", "lr", "images_per_second"} <= set(
        metrics[0]
    )
    assert [m["lr"] for m in metrics] == pytest.approx([0.01 * (1 - s / 4) ** 0.9 for s in range(4)])  # poly
    state = read_checkpoint(result.checkpoint, expected_model=resolved.model)
    assert (state["step"], state["epoch"], state["classes"]) == (4, 2, ["TE", "NEC", "LYM", "TAS"])
    assert {"optimizer", "scheduler", "rng", "histo_daen_version", "format_version"} <= set(state)
    assert state["config"]["optim"]["epochs"] == 2


def test_two_runs_with_one_seed_give_equal_losses_whatever_the_loader_workers(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    cfg = tiny_config("augment.colour=hed")
    train(cfg, output_dir=tmp_path / "a", device="cpu")
    train(load_config(TrainConfig, base=cfg, overrides=["data.workers=2"]), output_dir=tmp_path / "b", device="cpu")
    losses = [[m["loss"] for m in _metrics(tmp_path / run)] for run in ("a", "b")]
    assert losses[0] == losses[1]
    other_seed = load_config(TrainConfig, base=cfg, overrides=["seed=1"])
    train(other_seed, output_dir=tmp_path / "c", device="cpu")
    assert [m["loss"] for m in _metrics(tmp_path / "c")] != losses[0]


def test_cpu_bf16_trains_in_mixed_precision(tiny_config: Callable[..., TrainConfig], tmp_path: Path) -> None:
    train(tiny_config(), output_dir=tmp_path / "fp32", device="cpu")
    train(tiny_config("cpu_bf16=true"), output_dir=tmp_path / "bf16", device="cpu")
    fp32, bf16 = ([m["loss"] for m in _metrics(tmp_path / run)] for run in ("fp32", "bf16"))
    assert all(torch.isfinite(torch.tensor(bf16)))
    assert bf16 != fp32  # bf16 rounding shows in the losses: autocast was on
    assert bf16 == pytest.approx(fp32, rel=0.05)  # and only rounding: the same training


def test_existing_run_is_kept_without_overwrite(tiny_config: Callable[..., TrainConfig], tmp_path: Path) -> None:
    cfg = tiny_config()
    train(cfg, output_dir=tmp_path / "run", device="cpu")
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(
        OutputExistsError, match=r"run: holds a training run. Pass --resume to continue it, --overwrite"
    ):
        train(cfg, output_dir=tmp_path / "run", device="cpu")
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    again = train(cfg, output_dir=tmp_path / "run", device="cpu", overwrite=True)
    assert again.resumed_from is None and len(_metrics(tmp_path / "run")) == 2


def test_resume_refuses_a_checkpoint_of_another_config_naming_the_fields(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    train(tiny_config(), output_dir=tmp_path / "run", device="cpu")
    changed = tiny_config("optim.lr=0.02", "twin.scale=0.25")
    with pytest.raises(
        CheckpointError, match=r"another configuration \(optim.lr: stored 0.01, requested 0.02; twin.scale: stored 0.5"
    ):
        train(changed, output_dir=tmp_path / "run", device="cpu", resume=True)
    other_model = tiny_config("model.variant=seam")
    with pytest.raises(CheckpointError, match=r"another model config \(variant: stored 'daen', requested 'seam'\)"):
        train(other_model, output_dir=tmp_path / "run", device="cpu", resume=True)


def test_resuming_a_finished_run_changes_nothing(tiny_config: Callable[..., TrainConfig], tmp_path: Path) -> None:
    cfg = tiny_config()
    train(cfg, output_dir=tmp_path / "run", device="cpu")
    before = (tmp_path / "run" / "last.pt").read_bytes()
    # Loader workers and logging may change on resume; they do not change the result.
    result = train(tiny_config("data.workers=1", "log_every=5"), output_dir=tmp_path / "run", device="cpu", resume=True)
    assert (result.step, result.resumed_from) == (2, 2)
    assert result.losses["loss"] == pytest.approx(_metrics(tmp_path / "run")[-1]["loss"], abs=1e-6)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_inconsistent_settings_are_refused_before_training(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"batch_size 3 is not divisible by accumulation_steps 2"):
        train(tiny_config("optim.batch_size=3", "optim.accumulation_steps=2"), output_dir=tmp_path / "a")
    with pytest.raises(ConfigError, match=r"model.input_mpp 1.0 does not match .* set model.input_mpp=0.5"):
        train(tiny_config("data.input_scale=2.0"), output_dir=tmp_path / "b", device="cpu")
    with pytest.raises(ConfigError, match=r"'seam' needs a network with a PCM, but variant 'cam' has none"):
        train(tiny_config("model.variant=cam", "loss.objective=seam"), output_dir=tmp_path / "c", device="cpu")
    with pytest.raises(DatasetError, match=r"has 8 training patches, fewer than one batch of 16"):
        train(tiny_config("optim.batch_size=16"), output_dir=tmp_path / "d", device="cpu")
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_bad_dataset_stops_before_anything_is_written(tmp_path: Path, tiny_config: Callable[..., TrainConfig]) -> None:
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "train" / "patch.png").write_bytes(b"")
    cfg = tiny_config(f"data.root={tmp_path / 'data'}")
    with pytest.raises(DatasetError, match=r"data: 1 problem in the LUAD-HistoSeg folder: 1 file name without a label"):
        train(cfg, output_dir=tmp_path / "run", device="cpu")
    assert not (tmp_path / "run").exists()


def test_gradient_accumulation_matches_one_full_batch(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dropout masks are drawn per forward pass, so two half batches cannot match one whole batch with dropout on.
    monkeypatch.setattr(torch.nn.Dropout2d, "forward", lambda self, x: x)
    whole = train(tiny_config("optim.epochs=2"), output_dir=tmp_path / "whole", device="cpu")
    split = train(
        tiny_config("optim.epochs=2", "optim.accumulation_steps=2"), output_dir=tmp_path / "split", device="cpu"
    )
    a, b = (read_checkpoint(r.checkpoint)["state_dict"] for r in (whole, split))
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=1e-4, atol=1e-6)
    assert split.losses["loss"] == pytest.approx(whole.losses["loss"], rel=1e-5)


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, check=False, **kwargs)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result_as_an_uninterrupted_one(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    # 4 steps per epoch, 12 in all; last.pt after steps 3, 4, 6, 8, 9 and 12 (every 3 and each epoch end).
    cfg = tiny_config("optim.batch_size=2", "optim.epochs=3", "checkpoint_every=3", "augment.colour=hed")
    config_file = dump_config(cfg, tmp_path / "config.yaml")
    train(cfg, output_dir=tmp_path / "whole", device="cpu")  # uninterrupted, in this process

    marker = tmp_path / "paused"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    killed = subprocess.Popen(
        [sys.executable, str(RUNNER), str(config_file), str(tmp_path / "run"), "--pause-after", "7", str(marker)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)  # after step 7: between the checkpoints of steps 6 and 8, mid-epoch
    killed.wait()
    assert marker.exists(), "the run ended before it could be killed"
    assert read_checkpoint(tmp_path / "run" / "last.pt")["step"] == 6
    assert [m["step"] for m in _metrics(tmp_path / "run")] == [1, 2, 3, 4, 5, 6, 7]

    resumed = train(cfg, output_dir=tmp_path / "run", device="cpu", resume=True)
    assert (resumed.resumed_from, resumed.step) == (6, 12)
    assert _metrics(tmp_path / "run") == [
        {k: v for k, v in m.items() if k not in ("images_per_second", "data_time_share")}
        | {k: m2[k] for k in ("images_per_second", "data_time_share")}
        for m, m2 in zip(_metrics(tmp_path / "whole"), _metrics(tmp_path / "run"), strict=True)
    ]
    final = [read_checkpoint(p / "last.pt")["state_dict"] for p in (tmp_path / "whole", tmp_path / "run")]
    assert all(torch.equal(final[0][key], final[1][key]) for key in final[0])


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_process_with_the_same_global_batch(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config("optim.epochs=2", "augment.flips=true", "twin.flips=true", "twin.rotations=true")
    config_file = dump_config(cfg, tmp_path / "config.yaml")
    # Dropout masks are drawn per rank and cannot match one process's: both runs go without dropout.
    monkeypatch.setattr(torch.nn.Dropout2d, "forward", lambda self, x: x)
    train(cfg, output_dir=tmp_path / "one", device="cpu")
    ddp = _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(RUNNER),
            str(config_file),
            str(tmp_path / "two"),
            "--no-dropout",
        ]
    )
    assert ddp.returncode == 0, ddp.stderr
    one, two = (read_checkpoint(tmp_path / run / "last.pt") for run in ("one", "two"))
    assert two["world_size"] == 2 and len(two["rng"]) == 2
    moved = [k for k in one["state_dict"] if not torch.equal(one["state_dict"][k], build_initial(cfg)[k])]
    assert moved  # the comparison below is about trained weights
    for key, value in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][key], value, rtol=1e-4, atol=1e-5)
    losses = [[m["loss"] for m in _metrics(tmp_path / run)] for run in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def build_initial(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    seed_everything(cfg.seed)
    return build_model(cfg.model).state_dict()


def test_trains_on_the_labelled_tiles_of_a_tiled_slide(
    tiny_slide: Any, tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    # The "tiles" dataset is a registry entry; the loop is the same.
    config = TileConfig(target_mpp=2.0, tile_size=64)
    result = tile_slide(tiny_slide.path, tmp_path / "tiles" / "tiny", config, workers=0)
    rows = read_manifest(result.manifest_path)[:4]
    labels = tmp_path / "labels.csv"
    lines = [f"{result.output_dir.name}/{row['path']},1,0,{i % 2},1" for i, row in enumerate(rows)]
    labels.write_text("path,TE,NEC,LYM,TAS\n" + "\n".join(lines) + "\n")
    cfg = tiny_config(
        "data.dataset=tiles", f"data.root={tmp_path / 'tiles'}", f"data.labels_csv={labels}", "model.input_mpp=2.0"
    )
    trained = train(cfg, output_dir=tmp_path / "run", device="cpu")
    assert trained.step == 1 and read_checkpoint(trained.checkpoint)["config"]["data"]["dataset"] == "tiles"


def test_resume_refuses_a_dataset_that_changed_size(
    tiny_luad_root: Path, tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    data = Path(shutil.copytree(tiny_luad_root, tmp_path / "data"))
    cfg = tiny_config(f"data.root={data}")
    train(cfg, output_dir=tmp_path / "run", device="cpu")
    for patch in sorted((data / "train").glob("*.png"))[:4]:
        patch.unlink()
    with pytest.raises(CheckpointError, match=r"belongs to a run of 2 steps, but the dataset now gives 1"):
        train(cfg, output_dir=tmp_path / "run", device="cpu", resume=True)


def test_pretrained_weights_are_loaded_before_training(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seed_everything(123)  # another initialisation than the run's seed 0 would give
    donor = build_model(tiny_config().model).state_dict()
    torch.save(donor, tmp_path / "weights.pth")
    result = train(tiny_config(f"pretrained={tmp_path / 'weights.pth'}"), output_dir=tmp_path / "run", device="cpu")
    trained = read_checkpoint(result.checkpoint)["state_dict"]
    assert torch.equal(trained["conv1.weight"], donor["conv1.weight"])  # the frozen stem keeps the file's values
    assert not torch.equal(trained["fc8.weight"], donor["fc8.weight"])  # and training moved the head
    assert "NO PRETRAINED WEIGHTS" not in caplog.text


def test_training_without_pretrained_weights_warns_loudly(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train(tiny_config(), output_dir=tmp_path / "run", device="cpu")
    assert "NO PRETRAINED WEIGHTS: the resnet18 backbone starts from random weights" in caplog.text
    # The tiny config forces the reference recipe: the warning names its frozen random BatchNorm.
    assert "Frozen random BatchNorm does not learn: use recipe=scratch." in caplog.text


def test_the_log_window_averages_the_steps_since_the_last_line() -> None:
    from histo_daen.training.loop import LogWindow, StepResult

    window = LogWindow()
    window.add(StepResult({"loss": 1.0, "equivariant": 0.2}, lr=0.01, seconds=2.0, data_seconds=0.5))
    window.add(StepResult({"loss": 3.0, "equivariant": 0.4}, lr=0.01, seconds=1.0, data_seconds=0.1))
    assert window.mean_terms() == pytest.approx({"loss": 2.0, "equivariant": 0.3})
    assert (window.steps, window.seconds, window.data_seconds) == (2, 3.0, pytest.approx(0.6))
