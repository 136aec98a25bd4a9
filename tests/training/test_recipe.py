"""The training recipe follows the start: scratch without weights, reference with external weights, explicit
fields untouched, a histo-daen checkpoint passing on its own recipe, a resumed run keeping its stored one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from histo_daen.config.load import load_config
from histo_daen.config.schema import ModelConfig, TrainConfig
from histo_daen.models import build_model, checkpoint_state, save_checkpoint
from histo_daen.training.loop import train
from histo_daen.training.recipe import RECIPES, recipe_for_start, resolve_recipe


def _model_values(cfg: TrainConfig) -> dict[str, object]:
    return {
        "model.freeze_batchnorm": cfg.model.freeze_batchnorm,
        "model.freeze_stem": cfg.model.freeze_stem,
        "model.attention_form": cfg.model.attention_form,
        "optim.momentum": cfg.optim.momentum,
    }


def test_random_weights_get_the_scratch_recipe() -> None:
    resolved, note = resolve_recipe(TrainConfig())
    assert resolved.recipe == "scratch" and "random weights" in note
    assert _model_values(resolved) == RECIPES["scratch"]
    assert RECIPES["scratch"]["model.freeze_batchnorm"] is False and RECIPES["scratch"]["optim.momentum"] == 0.9


def test_external_weights_get_the_reference_recipe(tmp_path: Path) -> None:
    weights = tmp_path / "resnet18.pth"
    torch.save(build_model(variant="cam", backbone="resnet18", width=0.125).state_dict(), weights)
    resolved, note = resolve_recipe(load_config(TrainConfig, overrides=[f"pretrained={weights}"]))
    assert resolved.recipe == "reference" and "external pretrained weights" in note
    assert _model_values(resolved) == {
        "model.freeze_batchnorm": True,
        "model.freeze_stem": True,
        "model.attention_form": "reference",
        "optim.momentum": 5e-4,
    }


def test_fields_set_in_the_config_are_kept() -> None:
    cfg = load_config(TrainConfig, overrides=["model.freeze_batchnorm=true", "optim.momentum=0.5"])
    resolved, _ = resolve_recipe(cfg)
    assert resolved.recipe == "scratch"
    assert resolved.model.freeze_batchnorm is True and resolved.optim.momentum == 0.5
    assert resolved.model.freeze_stem is False  # the rest still follows the recipe


def test_an_explicit_recipe_wins_over_the_start() -> None:
    resolved, note = resolve_recipe(load_config(TrainConfig, overrides=["recipe=reference"]))
    assert _model_values(resolved) == RECIPES["reference"] and "set in the config" in note


def test_a_histo_daen_checkpoint_passes_on_its_recipe(tmp_path: Path) -> None:
    scratch, _ = resolve_recipe(load_config(TrainConfig, overrides=["model.variant=cam", "model.backbone=resnet18"]))
    path = save_checkpoint(tmp_path / "cam.pt", checkpoint_state(build_model(scratch.model), config=scratch))
    assert recipe_for_start(path)[0] == "scratch"
    # A checkpoint from before the recipe existed: its frozen or trained BatchNorm says how it started.
    old = {"model": {"variant": "cam", "backbone": "resnet18", "freeze_batchnorm": True}}
    path = save_checkpoint(
        tmp_path / "old.pt", checkpoint_state(build_model(variant="cam", backbone="resnet18"), config=old)
    )
    assert recipe_for_start(path)[0] == "reference"


def test_a_resumed_run_keeps_its_stored_recipe() -> None:
    resolved, note = resolve_recipe(TrainConfig(), stored_recipe="reference")
    assert resolved.recipe == "reference" and "resumed" in note


def test_models_built_outside_training_are_the_reference_network() -> None:
    cfg = build_model(variant="daen", backbone="resnet18", width=0.125).config
    assert isinstance(cfg, ModelConfig)
    assert (cfg.freeze_batchnorm, cfg.freeze_stem, cfg.attention_form) == (True, True, "reference")


def test_config_yaml_records_the_resolved_recipe(tiny_config: Callable[..., TrainConfig], tmp_path: Path) -> None:
    cfg = tiny_config("recipe=auto", "model.variant=cam", "optim.max_steps=1", "optim.momentum=null")
    train(cfg, output_dir=tmp_path / "run", device="cpu")
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert stored["recipe"] == "scratch"
    assert stored["model"]["freeze_batchnorm"] is False and stored["optim"]["momentum"] == 0.9
    checkpoint = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert checkpoint["model_config"]["attention_form"] == RECIPES["scratch"]["model.attention_form"]
