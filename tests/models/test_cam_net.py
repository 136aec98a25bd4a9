"""CamNet: outputs per variant, invariants, freezing and gradients, LR groups, and every reference-vs-choice option."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from histo_daen.config import ModelConfig
from histo_daen.models import CamNet, CamNetOutput, build_model
from histo_daen.models.cam_net import IMAGENET_MEAN, IMAGENET_STD
from histo_daen.models.pcm import pcm_seed_cams

TINY_RESNET38 = {"backbone": "resnet38", "width": 0.0625}
TINY_RESNET18 = {"backbone": "resnet18", "width": 0.125}


def tiny(variant: str = "daen", **fields: Any) -> CamNet:
    model = build_model(variant=variant, **(TINY_RESNET38 | fields))
    assert isinstance(model, CamNet)
    return model


@pytest.mark.parametrize(("size", "cam_side"), [(224, 28), (448, 56)])
def test_daen_outputs_at_patch_and_crop_size(size: int, cam_side: int) -> None:
    model = tiny().eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, size, size))
    assert isinstance(out, CamNetOutput)
    assert out.logits.shape == (1, 4)
    assert out.cams.shape == (1, 4, cam_side, cam_side)
    assert out.cams_refined is not None and out.cams_refined.shape == (1, 4, cam_side, cam_side)
    assert out.background_refined is not None and out.background_refined.shape == (1, 1, cam_side, cam_side)


@pytest.mark.parametrize("backbone", [TINY_RESNET38, TINY_RESNET18, {"backbone": "resnet50", "width": 0.0625}])
@pytest.mark.parametrize("variant", ["daen", "cm", "sm", "seam", "cam"])
def test_every_variant_and_backbone_gives_the_contract_shapes(variant: str, backbone: dict[str, Any]) -> None:
    model = build_model(variant=variant, num_classes=3, **backbone).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 40, 48))
    assert out.logits.shape == (2, 3)
    assert out.cams.shape == (2, 3, 5, 6)
    if variant == "cam":
        assert out.cams_refined is None and out.background_refined is None
    else:
        assert out.cams_refined.shape == (2, 3, 5, 6) and out.background_refined.shape == (2, 1, 5, 6)
    assert (model.attention is not None) == (variant in {"daen", "cm", "sm"})


@pytest.mark.parametrize("variant", ["daen", "seam", "cam"])
@pytest.mark.parametrize("backbone", [TINY_RESNET38, TINY_RESNET18])
def test_eval_mode_keeps_the_module_invariants(
    variant: str, backbone: dict[str, Any], images_64: torch.Tensor, module_checker: Callable[..., Any]
) -> None:
    model = build_model(variant=variant, **backbone)
    outputs = module_checker(model, images_64)
    assert outputs["cams"].shape == (2, 4, 8, 8)


def test_refined_cams_are_the_pcm_of_the_winner_take_all_seed() -> None:
    model = tiny().eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        seed = pcm_seed_cams(out.cams)
    # Each refined pixel is an affinity-weighted average of seed pixels (columns of A sum to 1), so refined
    # scores stay within the seed's range per channel and the background keeps its [0, 1] range.
    assert out.background_refined.min() >= 0 and out.background_refined.max() <= 1 + 1e-5
    assert (out.cams_refined.amax(dim=(2, 3)) <= seed[:, 1:].amax(dim=(2, 3)) + 1e-5).all()


def test_fc8_background_channel_never_reaches_the_outputs() -> None:
    model = tiny(background_channel=True).eval()
    assert model.fc8.out_channels == 5
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        model.fc8.weight[0].fill_(100.0)  # whatever channel 0 computes is discarded
        after = model(x)
    for name in ("logits", "cams", "cams_refined", "background_refined"):
        assert torch.equal(getattr(before, name), getattr(after, name)), name


def test_cam_variant_without_background_channel_has_k_outputs() -> None:
    model = tiny("cam", background_channel=False)
    assert model.fc8.out_channels == 4
    assert not hasattr(model, "f9")


def test_heads_are_initialised_as_the_reference() -> None:
    model = build_model(variant="seam", backbone="resnet38", width=0.25)
    fan_in, fan_out = model.fc8.in_channels, model.fc8.out_channels
    assert model.fc8.weight.abs().max() <= (6 / (fan_in + fan_out)) ** 0.5  # Xavier-uniform bound
    assert model.f9.weight.abs().max() <= 4 * (6 / (195 + 192)) ** 0.5  # gain 4
    assert model.f9.weight.abs().max() > (6 / (195 + 192)) ** 0.5  # ... and really wider than gain 1
    assert all(getattr(model, name).bias is None for name in ("fc8", "f8_3", "f8_4", "f9"))
    assert (model.f8_3.in_channels, model.f8_3.out_channels, model.f8_4.out_channels) == (128, 64, 128)


def test_full_width_daen_has_the_reference_parameter_count() -> None:
    # reference.md 1.2, LUAD heads: backbone 105,070,912 + fc8 4096 -> 5 (20,480) + PCM (201,280) = 105,292,672
    # for SEAM; + CSM 2,097,250 = 107,389,922 for DAEN.
    model = build_model(variant="daen", backbone="resnet38")
    total = sum(p.numel() for p in model.parameters())
    assert total == 107_389_922
    assert total - sum(p.numel() for p in model.csm.parameters()) == 105_292_672
    assert sum(p.numel() for name in ("f8_3", "f8_4", "f9") for p in getattr(model, name).parameters()) == 201_280


def test_deep_copy_keeps_backbone_and_network_in_step() -> None:
    model = tiny().eval()
    clone = copy.deepcopy(model)
    assert clone.backbone.conv1a is clone.conv1a and clone.conv1a is not model.conv1a
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x).cams
        clone.conv1a.weight.zero_()  # the clone's forward must see this, the original's must not
        assert not torch.equal(clone(x).cams, before)
        assert torch.equal(model(x).cams, before)


def test_state_dict_uses_the_seam_keys_without_prefix() -> None:
    keys = set(tiny().state_dict())
    assert {"conv1a.weight", "b2.conv_branch2a.weight", "bn7.weight", "fc8.weight", "f8_3.weight", "f9.weight"} <= keys
    assert "csm.channel_attention.mlp.0.weight" in keys and "csm.spatial_attention.conv.weight" in keys
    assert not any(k.startswith("backbone.") or k.startswith("input_") for k in keys)


def test_frozen_parts_get_no_gradient_and_batchnorm_statistics_stay_put() -> None:
    model = tiny().train()
    running_before = model.b4.bn_branch2a.running_mean.clone()
    out = model(torch.rand(2, 3, 64, 64))
    (out.logits.sum() + out.cams_refined.sum()).backward()
    for name, parameter in model.named_parameters():
        frozen = name.startswith(("conv1a", "b2.", "b2_1", "b2_2")) or ".bn_" in name or name.startswith("bn7")
        if frozen:
            assert not parameter.requires_grad and parameter.grad is None, name
        else:
            assert parameter.grad is not None, name
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.equal(model.b4.bn_branch2a.running_mean, running_before)
    assert model.b7.dropout_2b2.training and model.dropout7.training


def test_train_mode_refreezes_parameters_a_caller_unfroze() -> None:
    model = tiny()
    model.requires_grad_(True)
    model.train()
    assert not model.conv1a.weight.requires_grad and not model.bn7.weight.requires_grad


def test_dropout_makes_train_mode_stochastic_and_eval_mode_not() -> None:
    model = tiny("cam").train()
    x = torch.rand(2, 3, 64, 64)
    assert not torch.equal(model(x).cams, model(x).cams)
    model.eval()
    assert torch.equal(model(x).cams, model(x).cams)


def test_unfrozen_options_train_batchnorm_and_the_stem() -> None:
    model = build_model(variant="cam", freeze_batchnorm=False, freeze_stem=False, **TINY_RESNET18).train()
    running_before = model.bn1.running_mean.clone()
    model(torch.rand(2, 3, 64, 64)).logits.sum().backward()
    assert model.conv1.weight.grad is not None and model.bn1.weight.grad is not None
    assert not torch.equal(model.bn1.running_mean, running_before)


def test_pcm_losses_reach_only_the_pcm_layers() -> None:
    # reference.md 2.2: the PCM reads detached features and a detached seed, so backbone and fc8 get nothing.
    model = tiny()
    model(torch.rand(2, 3, 64, 64)).cams_refined.sum().backward()
    with_gradient = {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None}
    assert with_gradient == {"f8_3", "f8_4", "f9"}


def test_parameter_groups_split_trainable_weights_by_learning_rate() -> None:
    model = tiny()
    groups = model.parameter_groups()
    new = {id(p) for p in groups["new"]}
    backbone = {id(p) for p in groups["backbone"]}
    expected_new = {id(getattr(model, name).weight) for name in ("fc8", "f8_3", "f8_4", "f9")}
    assert new == expected_new
    assert not new & backbone
    assert new | backbone == {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in model.csm.parameters()} <= backbone  # the reference code trains the CSM at x1


def test_attention_can_join_the_new_layers_group() -> None:
    model = tiny(attention_lr_group="new")
    assert {id(p) for p in model.csm.parameters()} <= {id(p) for p in model.parameter_groups()["new"]}


def test_imagenet_normalisation_happens_inside_the_model() -> None:
    with_normalisation = tiny("seam", input_normalisation="imagenet").eval()
    without = tiny("seam", input_normalisation="none").eval()
    without.load_state_dict(with_normalisation.state_dict())
    x = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        a, b = with_normalisation(x), without((x - mean) / std)
    for name in ("logits", "cams", "cams_refined", "background_refined"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=1e-4)


def test_logits_pooling_choices() -> None:
    model = tiny("cam").eval()
    upsampled = tiny("cam", logits_pooling="upsampled").eval()
    upsampled.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out, reference = model(x), upsampled(x)
    torch.testing.assert_close(out.logits, out.cams.mean(dim=(2, 3)))
    seam_style = F.interpolate(out.cams, size=(64, 64), mode="bilinear", align_corners=True).mean(dim=(2, 3))
    torch.testing.assert_close(reference.logits, seam_style)
    assert not torch.allclose(out.logits, reference.logits)  # align_corners weighs border cells less


def test_attention_position_choices() -> None:
    pre = tiny().eval()
    post = tiny(attention_position="post_relu").eval()
    post.load_state_dict(pre.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        features = pre.forward_features(x)
        torch.testing.assert_close(pre.classifier_input(features), pre.csm(features.conv6_pre_relu))
        torch.testing.assert_close(post.classifier_input(features), pre.csm(features.conv6))
        assert not torch.allclose(pre(x).cams, post(x).cams)


def test_pcm_output_add_is_seed_plus_refined() -> None:
    replace = tiny().eval()
    add = tiny(pcm_output="add").eval()
    add.load_state_dict(replace.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = replace(x), add(x)
        seed = pcm_seed_cams(a.cams)
    torch.testing.assert_close(b.cams_refined, a.cams_refined + seed[:, 1:])
    torch.testing.assert_close(b.background_refined, a.background_refined + seed[:, :1])


def test_sum_pooling_builds_a_one_channel_spatial_conv() -> None:
    assert tiny(spatial_pooling="sum").csm.spatial_attention.conv.in_channels == 1


def test_model_keeps_its_config() -> None:
    cfg = ModelConfig(variant="sm", backbone="resnet18", width=0.125, num_classes=3)
    model = build_model(cfg)
    assert model.config == cfg.with_reference_choices()  # outside training, null choices are the reference code's
    assert model.csm.channel_attention is None


def test_images_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, H, W\), got \(3, 64, 64\)"):
        tiny()(torch.rand(3, 64, 64))
