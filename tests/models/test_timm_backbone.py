"""timm backbones (``backbone: timm:<name>``) with timm's tiny random test models: a CNN at output stride 8, a ViT
whose patch tokens are the CAM grid, every variant, the LR groups, and weights from local safetensors / .pth files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from histo_daen.config.schema import ModelConfig
from histo_daen.errors import ConfigError, WeightsError
from histo_daen.models import build_model, checkpoint_state, load_pretrained, save_checkpoint

CNN = "timm:test_resnet"  # timm's tiny ResNet (BasicBlock/Bottleneck mix, 96 channels at the end)
VIT = "timm:test_vit"  # timm's tiny ViT: patch 16, 64 dims, 6 blocks


def _model(backbone: str, variant: str = "daen", **fields: object):
    torch.manual_seed(0)
    return build_model(ModelConfig(variant=variant, backbone=backbone, input_size=64, **fields))  # type: ignore[arg-type]


def _timm(name: str):
    import timm

    torch.manual_seed(1)
    return timm.create_model(name, pretrained=False)


@pytest.mark.parametrize("variant", ["cam", "seam", "daen", "cm", "sm"])
@pytest.mark.parametrize(("backbone", "stride"), [(CNN, 8), (VIT, 16)])
def test_every_variant_runs_and_trains_on_timm_backbones(backbone: str, stride: int, variant: str) -> None:
    model = _model(backbone, variant)
    x = torch.rand(2, 3, 64, 80)
    out = model(x)
    grid = (-(-64 // stride), -(-80 // stride))  # ceil: a ViT pads the input to whole patches
    assert out.logits.shape == (2, 4) and out.cams.shape == (2, 4, *grid)
    assert model.backbone.output_stride == stride
    if variant == "cam":
        assert out.cams_refined is None
    else:
        assert out.cams_refined is not None and out.cams_refined.shape == (2, 4, *grid)
    loss = out.logits.sum() + (out.cams_refined.mean() if out.cams_refined is not None else 0)
    loss.backward()
    groups = model.parameter_groups()
    assert all(p.grad is not None for p in groups["new"] if p.requires_grad)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["backbone"])


@pytest.mark.parametrize("backbone", [CNN, VIT])
def test_lr_groups_put_the_timm_model_at_x1_and_the_heads_at_x10(backbone: str) -> None:
    model = _model(backbone, "daen")
    groups = model.parameter_groups()
    named = {id(p): name for name, p in model.named_parameters()}
    backbone_names = {named[id(p)] for p in groups["backbone"]}
    new_names = {named[id(p)] for p in groups["new"]}
    assert new_names and all(name.split(".")[0] in {"fc8", "f8_3", "f8_4", "f9"} for name in new_names)
    # The CSM trains with the backbone (reference code); everything else there is the timm model.
    assert all(name.startswith(("encoder.", "csm.")) for name in backbone_names)
    assert any(name.startswith("csm.") for name in backbone_names)
    encoder = {name for name, p in model.named_parameters() if name.startswith("encoder.")}
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert encoder == (backbone_names - {n for n in backbone_names if n.startswith("csm.")}) | (encoder & frozen)
    assert not new_names & backbone_names


def test_cnn_stem_and_batchnorm_are_frozen_as_for_the_built_in_resnets() -> None:
    model = _model(CNN, "seam")
    assert model.backbone.stem_names == (
        "encoder.conv1",
        "encoder.bn1",
        "encoder.act1",
        "encoder.maxpool",
        "encoder.layer1",
    )
    assert not any(p.requires_grad for p in model.get_submodule("encoder.layer1").parameters())
    assert model.get_submodule("encoder.layer2.0.conv1").weight.requires_grad
    assert not model.get_submodule("encoder.layer2.0.bn1").weight.requires_grad  # freeze_batchnorm
    model.train()
    assert not model.get_submodule("encoder.layer2.0.bn1").training


def test_vit_tokens_keep_their_grid_at_other_input_sizes() -> None:
    model = _model(VIT, "seam").eval()
    for size in (32, 64, 100, 128):  # training rescales the twin view; inference runs several scales
        with torch.no_grad():
            out = model(torch.rand(1, 3, size, size))
        assert out.cams.shape[-1] == -(-size // 16)


def test_timm_names_that_would_reach_a_hub_or_do_not_exist_are_refused() -> None:
    with pytest.raises(ConfigError, match="hub"):
        build_model(backbone="timm:hf-hub:MahmoodLab/UNI")
    with pytest.raises(ConfigError, match="Did you mean"):
        build_model(backbone="timm:vit_larg_patch16_224")
    with pytest.raises(ConfigError, match="timm:<model name>"):
        build_model(backbone="timm:")


def test_width_does_not_apply_to_timm_backbones() -> None:
    with pytest.raises(ConfigError, match="width"):
        build_model(backbone=CNN, width=0.5)


@pytest.mark.parametrize("backbone", [CNN, VIT])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_from_a_local_file_load_into_the_timm_model(backbone: str, suffix: str, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = _timm(backbone.removeprefix("timm:"))  # with its ImageNet classifier, as published weights are
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save({"state_dict": state}, path)  # wrapped, as training scripts save
    model = _model(backbone, "daen")
    report = load_pretrained(model, path)
    assert report.file_kind == "timm"
    own = model.state_dict()
    for key, value in state.items():
        if key == "pos_embed":  # published at 224 px (14 x 14 patches), resampled by timm to this model's 4 x 4
            assert own["encoder.pos_embed"].shape == (1, 1 + 16, 64)
            assert torch.equal(own["encoder.pos_embed"][:, 0], value[:, 0])  # the class token's own row is kept
        elif f"encoder.{key}" in own:
            assert torch.equal(own[f"encoder.{key}"], value), key
    assert set(report.ignored_layers) <= {"head", "fc", "fc_norm"}  # the classifier the CAM network replaces
    assert {key.split(".")[0] for key in report.left_at_init} == {"fc8", "f8_3", "f8_4", "f9", "csm"}


def test_weights_of_another_timm_model_are_refused_naming_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save(_timm("test_vit").state_dict(), path)
    with pytest.raises(WeightsError, match=r"other\.pth: .*(lacks|keys the model does not)"):
        load_pretrained(_model(CNN), path)


def test_a_pickle_with_code_is_refused_by_weights_only_loading(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save(_timm("test_resnet"), path)  # the whole module object, not a state dict
    with pytest.raises(WeightsError, match="weights_only"):
        load_pretrained(_model(CNN), path)


def test_a_timm_checkpoint_of_ours_gives_its_backbone(tmp_path: Path) -> None:
    trained = _model(VIT, "cam")
    path = save_checkpoint(tmp_path / "last.pt", checkpoint_state(trained))
    model = _model(VIT, "daen")
    load_pretrained(model, path)
    assert torch.equal(
        model.state_dict()["encoder.blocks.5.mlp.fc2.weight"], trained.state_dict()["encoder.blocks.5.mlp.fc2.weight"]
    )


def test_custom_normalisation_reaches_the_input() -> None:
    model = _model(VIT, "cam", input_normalisation="custom", input_mean=(0.7, 0.6, 0.7), input_std=(0.2, 0.2, 0.2))
    x = torch.full((1, 3, 32, 32), 0.9)
    assert torch.allclose(model.normalise_input(x)[0, :, 0, 0], torch.tensor([1.0, 1.5, 1.0]))
    with pytest.raises(ConfigError, match="input_mean"):
        build_model(variant="cam", backbone=VIT, input_size=64, input_normalisation="custom")


def _published(folder: Path, name: str, **pretrained_cfg: object) -> Path:
    """A timm weights file as a hub release lays it out: model.safetensors with timm's config.json beside it."""
    import json

    from safetensors.torch import save_file

    folder.mkdir()
    save_file({k: v.contiguous() for k, v in _timm(name).state_dict().items()}, folder / "model.safetensors")
    config = {"architecture": name, "model_args": {}, "pretrained_cfg": {"input_size": [3, 224, 224], **pretrained_cfg}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder / "model.safetensors"


def test_the_weights_config_says_which_normalisation_to_pass(tmp_path: Path) -> None:
    path = _published(tmp_path / "hoptimus", "test_vit", mean=[0.707223, 0.578729, 0.703617], std=[0.2, 0.23, 0.18])
    with pytest.raises(WeightsError, match=r"model\.input_normalisation=custom model\.input_mean=\[0\.707223, "):
        load_pretrained(_model(VIT), path)
    matching = _model(
        VIT, input_normalisation="custom", input_mean=(0.707223, 0.578729, 0.703617), input_std=(0.2, 0.23, 0.18)
    )
    assert load_pretrained(matching, path).file_kind == "timm"
    imagenet = _published(tmp_path / "uni", "test_vit", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    with pytest.raises(WeightsError, match=r"Pass model\.input_normalisation=imagenet\."):
        load_pretrained(_model(VIT, input_normalisation="none"), imagenet)


def test_the_weights_config_names_their_architecture(tmp_path: Path) -> None:
    path = _published(tmp_path / "cnn", "test_resnet")
    with pytest.raises(WeightsError, match=r"is for timm:test_resnet .*Pass --backbone timm:test_resnet"):
        load_pretrained(_model(VIT), path)


def test_transformers_layout_is_named_as_such(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"  # what Phikon's Hugging Face release holds (transformers' ViTModel keys)
    save_file({"embeddings.patch_embeddings.projection.weight": torch.zeros(8, 3, 16, 16)}, path)
    with pytest.raises(WeightsError, match="Hugging Face transformers model"):
        load_pretrained(_model(VIT), path)


def test_a_damaged_safetensors_file_is_a_weights_error(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_pretrained(_model(CNN), path)
