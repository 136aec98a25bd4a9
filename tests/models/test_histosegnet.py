"""The HistoSegNet baseline network: the CamNetOutput contract, its LR groups, training through the loop."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from histo_daen.config.load import load_config
from histo_daen.config.schema import TrainConfig
from histo_daen.data.synthetic_dataset import write_synthetic_luad
from histo_daen.models import build_model, load_model, variant_names
from histo_daen.models.histosegnet import HistoSegNet
from histo_daen.training.loop import train


def test_histosegnet_is_a_registered_variant_without_pcm(
    module_checker: Callable[..., dict[str, torch.Tensor | None]], images_64: torch.Tensor
) -> None:
    assert "histosegnet" in variant_names()
    model = build_model(variant="histosegnet", backbone="resnet18", width=0.25)
    assert isinstance(model, HistoSegNet) and not model.use_pcm
    out = module_checker(model, images_64)
    assert out["logits"].shape == (2, 4)
    assert out["cams"].shape == (2, 4, 8, 8)
    assert out["cams_refined"] is None and out["background_refined"] is None


def test_head_maps_pooled_give_the_logits_only_without_the_hidden_nonlinearity() -> None:
    # With a dense layer after pooling, logits are not the mean of per-pixel scores: Grad-CAM is not plain CAM.
    model = build_model(variant="histosegnet", backbone="resnet18", width=0.25).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    out = model(images)
    assert not torch.allclose(out.cams.mean(dim=(2, 3)), out.logits, atol=1e-3)


def test_dense_head_trains_at_the_new_layer_rate_and_backbone_at_the_base_rate() -> None:
    model = build_model(variant="histosegnet", backbone="resnet18", width=0.25, freeze_stem=False)
    groups = model.parameter_groups()
    head = {id(p) for p in [*model.fc_hidden.parameters(), *model.fc_out.parameters()]}
    assert {id(p) for p in groups["new"]} == head
    assert head.isdisjoint(id(p) for p in groups["backbone"])
    assert not hasattr(model, "fc8")  # the 1x1 CAM classifier is replaced, not left untrained


def test_hidden_width_follows_the_backbone() -> None:
    model = build_model(variant="histosegnet", backbone="resnet18", width=0.25)
    channels = model.backbone.feature_channels["conv6"]
    assert model.fc_hidden.in_features == channels
    assert model.fc_hidden.out_features == max(16, channels // 4)


@pytest.mark.slow
def test_trains_through_the_loop_with_the_classification_objective(tmp_path: Path) -> None:
    root = write_synthetic_luad(tmp_path / "LUAD", n_train=8, n_val=0, n_test=0, patch_size=64, seed=3).root
    cfg = load_config(
        TrainConfig,
        overrides={
            "model": {"variant": "histosegnet", "backbone": "resnet18", "width": 0.25, "input_size": 64},
            "data": {"root": root, "workers": 0},
            "augment": {"colour": "none", "flips": False, "rotations": False},
            "optim": {"batch_size": 8, "epochs": 6, "momentum": 0.9},
            "log_every": 1,
        },
    )
    result = train(cfg, output_dir=tmp_path / "run", device="cpu")
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line]
    assert result.objective == "classification"
    assert result.step == 6 and len(losses) == 6
    assert losses[-1] < 0.9 * losses[0]  # the same batch every step: the classification loss must fall
    loaded = load_model(result.checkpoint)
    assert isinstance(loaded.model, HistoSegNet) and loaded.model_config.variant == "histosegnet"
    assert set(result.losses) == {"loss", "classification"}
