"""The end-to-end accuracy check, small: a CAM network trained on synthetic LUAD patches segments their test split
far better than chance and than the same network untrained (``benchmarks/bench_accuracy.py`` is the full version).

Train -> checkpoint -> evaluate, all through the library, on the CPU, about a minute on two idle cores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from histo_daen.config.load import load_config
from histo_daen.config.schema import DataConfig, EvaluateConfig, InferenceConfig, TrainConfig
from histo_daen.data.masks import read_mask
from histo_daen.data.registry import load_splits
from histo_daen.data.synthetic_dataset import write_synthetic_luad
from histo_daen.evaluation.evaluate import evaluate
from histo_daen.evaluation.metrics import confusion_matrix, scores
from histo_daen.models import build_model, checkpoint_state, save_checkpoint
from histo_daen.seeding import seed_everything
from histo_daen.training.loop import train

SINGLE_VIEW = EvaluateConfig(batch_size=16, n_examples=0, inference=InferenceConfig(scales=(1.0,), flip=False))


def _config(root: Path) -> TrainConfig:
    return load_config(
        TrainConfig,
        overrides={
            "model": {
                "variant": "cam",
                "backbone": "resnet18",
                "width": 0.25,
                "input_size": 64,
                "freeze_batchnorm": False,  # from random initialisation BatchNorm must learn its statistics
                "freeze_stem": False,
            },
            "data": {"root": root, "workers": 0},
            "augment": {"colour": "none"},
            "optim": {"batch_size": 16, "lr": 0.02, "momentum": 0.9, "epochs": 100, "max_steps": 120},
            "log_every": 20,
        },
    )


def _majority_class_miou(root: Path) -> float:
    """Chance: the test split's most frequent tissue class predicted everywhere."""
    masks = [read_mask(r.mask) for r in load_splits(DataConfig(root=root, validate=False), ("test",))["test"]]
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=5)[:4]
    matrix = sum(confusion_matrix(m, np.full_like(m, counts.argmax())) for m in masks)
    return scores(np.asarray(matrix)).miou


@pytest.mark.slow
def test_trained_cams_segment_far_above_chance_and_an_untrained_network(tmp_path: Path) -> None:
    root = write_synthetic_luad(tmp_path / "LUAD", n_train=96, n_val=0, n_test=16, patch_size=64, seed=0).root
    cfg = _config(root)
    seed_everything(cfg.seed)
    untrained = save_checkpoint(tmp_path / "untrained.pt", checkpoint_state(build_model(cfg.model), config=cfg))
    torch.manual_seed(cfg.seed)
    trained = train(cfg, output_dir=tmp_path / "run", device="cpu").checkpoint

    chance = _majority_class_miou(root)
    before = evaluate(untrained, root, tmp_path / "eval_untrained", SINGLE_VIEW).scores.miou
    after = evaluate(trained, root, tmp_path / "eval_trained", SINGLE_VIEW).scores.miou
    # Measured once on this set: chance 0.094, untrained 0.149, trained 0.595. The margins leave room for other CPUs.
    assert after > chance + 0.25, (after, chance)
    assert after > before + 0.25, (after, before)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Training figures depend on the thread count (the order of floating-point sums): pin it for the floors."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _coverage_trace(run_dir: Path) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return [(int(r["step"]), float(r["cam_coverage"])) for r in lines]


@pytest.mark.slow
def test_daen_from_random_weights_keeps_its_cams_spread_where_the_coded_attention_collapses(
    tmp_path: Path, one_torch_thread: None
) -> None:
    root = write_synthetic_luad(tmp_path / "LUAD", n_train=96, n_val=0, n_test=4, patch_size=64, seed=0).root
    overrides = {
        "model": {"variant": "daen", "backbone": "resnet18", "width": 0.25, "input_size": 64},
        "data": {"root": root, "workers": 0},
        "augment": {"colour": "none"},
        "optim": {"batch_size": 16, "lr": 0.02, "epochs": 100, "max_steps": 120},
        "log_every": 20,
    }
    default = load_config(TrainConfig, overrides=overrides)  # no weights: the scratch recipe decides the rest
    train(default, output_dir=tmp_path / "default", device="cpu")
    coded = load_config(TrainConfig, base=default, overrides=["model.attention_form=reference"])
    train(coded, output_dir=tmp_path / "coded", device="cpu")

    spread = _coverage_trace(tmp_path / "default")
    collapsed = _coverage_trace(tmp_path / "coded")
    # cam_coverage: share of the present classes' pixels whose max-normalised CAM exceeds 0.2 (training log).
    # Measured once with one torch thread (seed 0): residual 0.29 at step 20 falling to 0.15 at step 120, coded
    # 0.07 falling to 0.05. The floor separates a spread CAM from a collapsed one; at this size (64 px, 120 steps)
    # even the residual form does not hold 0.2 (the ablation, 96 px and 300 steps, is where the README's figures
    # come from).
    assert min(value for step, value in spread if step > 20) >= 0.1, spread
    assert collapsed[-1][1] < 0.1, collapsed  # the check can fail: the DAEN code's attention does collapse here
