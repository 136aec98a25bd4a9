"""import_reference_checkpoint: SEAM and MLPS stage-1 checkpoints become histo-daen checkpoints computing the same."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
import torch

from histo_daen.errors import ConfigError, OutputExistsError, WeightsError
from histo_daen.models import CamNet, build_model, load_model
from histo_daen.models.weights import import_reference_checkpoint

WIDTH = 0.0625
VOC = (
    "aeroplane,bicycle,bird,boat,bottle,bus,car,cat,chair,cow,diningtable,dog,horse,motorbike,person,pottedplant,"
    "sheep,sofa,train,tvmonitor"
)


def _random_net(variant: str, *, num_classes: int, background_channel: bool, seed: int) -> CamNet:
    """A ResNet38 CAM network standing in for a trained reference network: random convs, random BatchNorm.

    Its state dict has the reference key layout (SEAM's ``network/resnet38_SEAM.py`` for ``seam``, MLPS's
    ``network/resnet38_cls.py`` for ``cam`` without background channel), which the models tests pin.
    """
    torch.manual_seed(seed)
    net = build_model(
        variant=variant,
        backbone="resnet38",
        width=WIDTH,
        num_classes=num_classes,
        background_channel=background_channel,
        input_normalisation="imagenet" if background_channel else "none",
    )
    assert isinstance(net, CamNet)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                # Statistics a trained network would have, not the (1, 0, 0, 1) initialisation.
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture
def seam_net() -> CamNet:
    """SEAM trained on VOC: fc8 = background + 20 classes, PCM."""
    return _random_net("seam", num_classes=20, background_channel=True, seed=1)


@pytest.fixture
def seam_file(tmp_path: Path, seam_net: CamNet) -> Path:
    path = tmp_path / "resnet38_SEAM.pth"
    torch.save(seam_net.state_dict(), path)
    return path


@pytest.fixture
def mlps_net() -> CamNet:
    """MLPS stage 1: fc8 = 4 classes, no background, no PCM, no input normalisation."""
    return _random_net("cam", num_classes=4, background_channel=False, seed=2)


@pytest.fixture
def mlps_file(tmp_path: Path, mlps_net: CamNet) -> Path:
    path = tmp_path / "stage1_checkpoint_trained_on_bcss.pth"
    torch.save({f"module.{k}": v for k, v in mlps_net.state_dict().items()}, path)
    return path


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(3))


def test_seam_checkpoint_imports_as_seam_and_computes_the_same_cams(
    tmp_path: Path, seam_file: Path, seam_net: CamNet, images: torch.Tensor
) -> None:
    result = import_reference_checkpoint(seam_file, tmp_path / "seam_voc.pt", classes=VOC)
    loaded = load_model(result.output)

    with torch.no_grad():
        expected, got = seam_net(images), loaded.model(images)
    for name in ("logits", "cams", "cams_refined", "background_refined"):
        assert torch.isfinite(getattr(expected, name)).all(), name
        assert torch.equal(getattr(expected, name), getattr(got, name)), name
    config = loaded.model_config
    assert (config.variant, config.backbone, config.width) == ("seam", "resnet38", WIDTH)
    assert (config.num_classes, config.background_channel, config.input_normalisation) == (20, True, "imagenet")
    assert config.class_set == "custom"
    assert loaded.classes == tuple(VOC.split(","))


def test_classes_outside_the_class_sets_are_imported_with_a_warning(
    tmp_path: Path, seam_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="histo_daen.models.weights"):
        result = import_reference_checkpoint(seam_file, tmp_path / "seam_voc.pt", classes=VOC)

    assert result.class_set is None
    assert "are not a histo-daen class set (luad, bcss)" in caplog.text
    assert "evaluate and segment need the classes of a class set" in caplog.text


def test_the_source_is_recorded(tmp_path: Path, seam_file: Path) -> None:
    result = import_reference_checkpoint(seam_file, tmp_path / "seam_voc.pt", classes=VOC)

    source = load_model(result.output).state["source"]

    assert source["kind"] == "seam"
    assert source["file"] == "resnet38_SEAM.pth"
    assert source["sha256"] == hashlib.sha256(seam_file.read_bytes()).hexdigest()
    assert source["tensors_loaded"] == 195  # 191 backbone + fc8, f8_3, f8_4, f9
    assert source["not_carried_over"] == []


def test_seam_checkpoint_as_cam_drops_the_pcm(
    tmp_path: Path, seam_file: Path, seam_net: CamNet, images: torch.Tensor
) -> None:
    result = import_reference_checkpoint(seam_file, tmp_path / "cam.pt", classes=VOC, variant="cam")
    loaded = load_model(result.output)

    with torch.no_grad():
        expected, got = seam_net(images), loaded.model(images)
    assert torch.equal(expected.cams, got.cams)
    assert got.cams_refined is None
    assert loaded.state["source"]["not_carried_over"] == ["f8_3", "f8_4", "f9"]
    assert loaded.model_config.background_channel


def test_mlps_checkpoint_imports_as_cam_without_normalisation(
    tmp_path: Path, mlps_file: Path, mlps_net: CamNet, images: torch.Tensor
) -> None:
    result = import_reference_checkpoint(mlps_file, tmp_path / "mlps_bcss.pt", classes="bcss")
    loaded = load_model(result.output)

    with torch.no_grad():
        expected, got = mlps_net(images), loaded.model(images)
    assert torch.equal(expected.cams, got.cams)
    assert torch.equal(expected.logits, got.logits)
    config = loaded.model_config
    assert (config.variant, config.num_classes, config.background_channel) == ("cam", 4, False)
    assert (config.input_normalisation, config.class_set) == ("none", "bcss")
    assert loaded.classes == ("TUM", "STR", "LYM", "NEC")
    assert result.source_kind == "mlps"


def test_class_names_equal_to_a_class_set_take_its_name(tmp_path: Path, mlps_file: Path) -> None:
    result = import_reference_checkpoint(mlps_file, tmp_path / "luad.pt", classes="TE, NEC, LYM, TAS")

    assert result.model_config.class_set == "luad"


def test_normalisation_can_be_overridden(tmp_path: Path, mlps_file: Path) -> None:
    result = import_reference_checkpoint(mlps_file, tmp_path / "m.pt", classes="luad", input_normalisation="imagenet")

    assert result.model_config.input_normalisation == "imagenet"


def test_mlps_checkpoint_cannot_be_a_seam_model(tmp_path: Path, mlps_file: Path) -> None:
    with pytest.raises(
        WeightsError,
        match=r"stage1_checkpoint_trained_on_bcss\.pth: has no PCM layers \(f8_3, f8_4, f9\): it is an MLPS "
        r"stage-1 checkpoint\. Import it as --variant cam",
    ):
        import_reference_checkpoint(mlps_file, tmp_path / "x.pt", classes="bcss", variant="seam")


def test_a_class_count_that_does_not_match(tmp_path: Path, seam_file: Path) -> None:
    with pytest.raises(
        WeightsError,
        match=r"resnet38_SEAM\.pth: has an fc8 with 21 outputs \(background \+ 20 classes\), but 4 class names were "
        r"given \(TE, NEC, LYM, TAS\)\. Name its 20 foreground classes",
    ):
        import_reference_checkpoint(seam_file, tmp_path / "x.pt", classes="luad")
    assert not (tmp_path / "x.pt").exists()


def test_missing_keys_are_named(tmp_path: Path, seam_net: CamNet) -> None:
    state = seam_net.state_dict()
    del state["b5_1.conv_branch2b1.weight"]
    path = tmp_path / "incomplete.pth"
    torch.save(state, path)

    with pytest.raises(WeightsError, match=r"incomplete\.pth: lacks 1 of the model's 228 backbone tensors: b5_1\.conv"):
        import_reference_checkpoint(path, tmp_path / "x.pt", classes=VOC)


def test_a_missing_pcm_layer_is_named(tmp_path: Path, seam_net: CamNet) -> None:
    state = seam_net.state_dict()
    del state["f8_4.weight"]
    path = tmp_path / "no_f8_4.pth"
    torch.save(state, path)

    with pytest.raises(WeightsError, match=r"no_f8_4\.pth: lacks 1 tensors of the model: f8_4\.weight"):
        import_reference_checkpoint(path, tmp_path / "x.pt", classes=VOC)


def test_unexpected_keys_are_named(tmp_path: Path, seam_net: CamNet) -> None:
    state = seam_net.state_dict() | {"csm.ChannelAttention.fc1.weight": torch.zeros(16, 256, 1, 1)}
    path = tmp_path / "daen.pth"
    torch.save(state, path)

    with pytest.raises(
        WeightsError, match=r"daen\.pth: has keys the model does not: csm\.ChannelAttention\.fc1\.weight"
    ):
        import_reference_checkpoint(path, tmp_path / "x.pt", classes=VOC)


def test_a_wrong_shape_is_named(tmp_path: Path, seam_net: CamNet) -> None:
    state = seam_net.state_dict() | {"f9.weight": torch.zeros(192, 196, 1, 1)}
    path = tmp_path / "odd.pth"
    torch.save(state, path)

    with pytest.raises(
        WeightsError, match=r"odd\.pth: has heads of other shapes: f9\.weight \(192, 196, 1, 1\) in the file, "
    ):
        import_reference_checkpoint(path, tmp_path / "x.pt", classes=VOC)


def test_a_bare_backbone_is_not_a_checkpoint_to_import(tmp_path: Path, seam_net: CamNet) -> None:
    path = tmp_path / "backbone.pth"
    torch.save({k: v for k, v in seam_net.state_dict().items() if not k.startswith("f")}, path)

    with pytest.raises(
        WeightsError, match=r"backbone\.pth: holds a ResNet38 backbone state dict .*, not a trained SEAM or MLPS"
    ):
        import_reference_checkpoint(path, tmp_path / "x.pt", classes="luad")


def test_an_existing_output_is_kept_without_overwrite(tmp_path: Path, mlps_file: Path) -> None:
    output = tmp_path / "mlps.pt"
    output.write_bytes(b"previous")

    with pytest.raises(OutputExistsError, match=r"mlps\.pt: already exists\. Pass --overwrite"):
        import_reference_checkpoint(mlps_file, output, classes="bcss")
    assert output.read_bytes() == b"previous"
    import_reference_checkpoint(mlps_file, output, classes="bcss", overwrite=True)
    assert load_model(output).classes == ("TUM", "STR", "LYM", "NEC")


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (None, r"classes: name the checkpoint's classes in fc8 order"),
        ("TE,NEC,,TAS", r"has an empty name"),
        ("TE,NEC,TE,TAS", r"names a class twice"),
    ],
)
def test_malformed_classes(tmp_path: Path, mlps_file: Path, classes: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        import_reference_checkpoint(mlps_file, tmp_path / "x.pt", classes=classes)
