"""The variant/backbone registry and build_model: names, errors listing the valid names, overrides, plug-ins."""

from __future__ import annotations

import pytest
import torch

from histo_daen.config import ModelConfig
from histo_daen.errors import ConfigError
from histo_daen.models import CamNet, CamNetOutput, registry
from histo_daen.models.registry import (
    backbone_names,
    build_backbone,
    build_model,
    register_variant,
    variant_names,
)


def test_built_in_variants_and_backbones_are_registered() -> None:
    assert {"daen", "seam", "cm", "sm", "cam"} <= set(variant_names())
    assert backbone_names() == ("resnet38", "resnet18", "resnet50")


def test_build_model_takes_a_config_or_fields() -> None:
    from_config = build_model(ModelConfig(variant="cm", backbone="resnet18", width=0.125))
    from_fields = build_model(variant="cm", backbone="resnet18", width=0.125)
    assert from_config.config == from_fields.config
    overridden = build_model(ModelConfig(variant="cm", backbone="resnet18", width=0.125), variant="seam")
    assert overridden.config.variant == "seam" and overridden.config.backbone == "resnet18"
    assert isinstance(overridden, CamNet) and overridden.attention is None


def test_unknown_variant_lists_the_valid_names() -> None:
    with pytest.raises(
        ConfigError, match=r"variant: 'daem' is not one of daen, seam, cm, sm, cam.*Did you mean 'daen'"
    ):
        build_model(variant="daem")


def test_unknown_backbone_in_a_ready_made_config_lists_the_valid_names() -> None:
    cfg = ModelConfig(backbone="resnet101")
    with pytest.raises(
        ConfigError, match=r"unknown backbone 'resnet101'.*Valid: resnet38, resnet18, resnet50, timm:<name>"
    ):
        build_model(cfg)


def test_build_backbone_refuses_an_unregistered_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown backbone 'resnet34'.*Valid: resnet38, resnet18, resnet50"):
        build_backbone("resnet34")


def test_invalid_field_values_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"spatial_pooling: 'mean' is not one of concat, sum"):
        build_model(spatial_pooling="mean")
    with pytest.raises(ConfigError, match=r"unknown key 'widht'.*Did you mean 'width'"):
        build_model(widht=0.5)


def test_a_registered_variant_is_available_to_build_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_VARIANTS", dict(registry._VARIANTS))
    monkeypatch.delitem(registry._VARIANTS, "sm")  # stands in for a plug-in variant, under a valid name

    def build_plain_cam(cfg: ModelConfig) -> CamNet:
        return CamNet(cfg, build_backbone(cfg.backbone, width=cfg.width), use_pcm=False)

    register_variant("sm", build_plain_cam)
    model = build_model(variant="sm", backbone="resnet18", width=0.125).eval()
    out = model(torch.rand(1, 3, 32, 32))
    assert isinstance(out, CamNetOutput) and out.cams_refined is None


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="model variant 'daen' is already registered"):
        register_variant("daen", lambda cfg: CamNet(cfg, build_backbone("resnet18")))


@pytest.mark.parametrize(
    ("variant", "pcm", "grad_cam"),
    [
        ("daen", True, False),
        ("seam", True, False),
        ("cm", True, False),
        ("sm", True, False),
        ("cam", False, False),
        ("histosegnet", False, True),
    ],
)
def test_every_variant_is_a_camnet_that_declares_what_it_supports(variant: str, pcm: bool, grad_cam: bool) -> None:
    from histo_daen.models.cam_net import CamModel, CamNet, GradCamModel, ModelAbilities

    model = build_model(variant=variant, backbone="resnet18", width=0.125)
    assert isinstance(model, CamNet) and isinstance(model, CamModel)
    assert model.abilities == ModelAbilities(pcm=pcm, grad_cam=grad_cam)
    assert isinstance(model, GradCamModel) == grad_cam  # only Grad-CAM networks carry grad_cams(x)
    groups = model.parameter_groups()
    assert groups["new"] and groups["backbone"]
