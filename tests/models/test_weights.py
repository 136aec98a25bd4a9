"""load_pretrained: every accepted file kind loads the right tensors, every bad file gets its own clear error."""

from __future__ import annotations

import argparse
import logging
import re
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from histo_daen.errors import WeightsError
from histo_daen.models import CamNet, build_model, load_pretrained
from histo_daen.models.checkpoint import checkpoint_state, save_checkpoint
from histo_daen.models.weights import mxnet_to_seam_key, read_weights_file

WIDTH = 0.0625  # ResNet38 with 4 channels in conv1a: the real layer structure, test-sized


def _resnet38(variant: str = "seam", *, num_classes: int = 4, width: float = WIDTH, **fields: object) -> CamNet:
    model = build_model(variant=variant, backbone="resnet38", width=width, num_classes=num_classes, **fields)
    assert isinstance(model, CamNet)
    return model


def _randomised(model: CamNet, seed: int) -> CamNet:
    """Every parameter and running statistic drawn at random, so loaded values cannot equal an init by chance."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    return model


def _backbone_state(model: CamNet) -> dict[str, torch.Tensor]:
    heads = ("fc8.", "f8_3.", "f8_4.", "f9.", "csm.")
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(heads)}


def _assert_tensors_equal(model: torch.nn.Module, expected: Mapping[str, torch.Tensor]) -> None:
    own = model.state_dict()
    for key, tensor in expected.items():
        assert torch.equal(own[key], tensor.to(own[key].dtype)), key


def _mxnet_name(seam_key: str) -> str:
    """SEAM's PyTorch key -> the name Wu's MXNet file gives it (the inverse of reference.md section 1.4)."""
    bn_params = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_var"}
    parts = seam_key.split(".")
    if parts == ["conv1a", "weight"]:
        return "arg:conv1a_weight"
    if parts[0] == "bn7":
        prefix = "aux" if parts[1].startswith("running") else "arg"
        return f"{prefix}:bn7_{bn_params[parts[1]]}"
    block, layer, leaf = parts
    match = re.fullmatch(r"b(\d)(?:_(\d))?", block)
    assert match, seam_key
    unit = f"{match[1]}b{match[2]}" if match[2] else f"{match[1]}a"
    kind, branch = layer.split("_", 1)  # "conv_branch2a" -> ("conv", "branch2a")
    if kind == "conv":
        return f"arg:res{unit}_{branch}_weight"
    prefix = "aux" if leaf.startswith("running") else "arg"
    return f"{prefix}:bn{unit}_{branch}_{bn_params[leaf]}"


def _write_mxnet(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """An MXNet NDArray list file (v2 records, float32), as laid out in histo_daen/models/mxnet_params.py."""
    out = struct.pack("<QQQ", 0x112, 0, len(arrays))
    for array in arrays.values():
        out += struct.pack(f"<IiI{array.ndim}q", 0xF993FAC9, 0, array.ndim, *array.shape)
        out += struct.pack("<iii", 1, 0, 0) + np.ascontiguousarray(array, dtype="<f4").tobytes()
    out += struct.pack("<Q", len(arrays))
    for name in arrays:
        out += struct.pack("<Q", len(name)) + name.encode()
    path.write_bytes(out)
    return path


@pytest.fixture
def source() -> CamNet:
    """A trained-looking ResNet38 seam network (random values everywhere) to save in the reference layouts."""
    return _randomised(_resnet38("seam", num_classes=20), seed=1)


@pytest.fixture
def backbone_file(tmp_path: Path, source: CamNet) -> Path:
    path = tmp_path / "resnet38_backbone.pth"
    torch.save(_backbone_state(source), path)
    return path


@pytest.fixture
def mxnet_file(tmp_path: Path, source: CamNet) -> Path:
    arrays = {
        _mxnet_name(k): v.numpy() for k, v in _backbone_state(source).items() if not k.endswith("num_batches_tracked")
    }
    arrays["arg:linear1000_weight"] = np.ones((10, 4 * 16), np.float32)
    arrays["arg:linear1000_bias"] = np.ones(10, np.float32)
    return _write_mxnet(tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params", arrays)


# --- MXNet names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mxnet", "seam"),
    [
        ("arg:conv1a_weight", "conv1a.weight"),
        ("arg:res2a_branch1_weight", "b2.conv_branch1.weight"),
        ("arg:res2b1_branch2a_weight", "b2_1.conv_branch2a.weight"),
        ("arg:res4b5_branch2b1_weight", "b4_5.conv_branch2b1.weight"),
        ("arg:res7a_branch2b2_weight", "b7.conv_branch2b2.weight"),
        ("arg:bn3b2_branch2a_gamma", "b3_2.bn_branch2a.weight"),
        ("arg:bn5a_branch2b1_beta", "b5.bn_branch2b1.bias"),
        ("aux:bn6a_branch2b2_moving_var", "b6.bn_branch2b2.running_var"),
        ("aux:bn4b3_branch2a_moving_mean", "b4_3.bn_branch2a.running_mean"),
        ("arg:bn7_gamma", "bn7.weight"),
        ("aux:bn7_moving_mean", "bn7.running_mean"),
        ("bn7_beta", "bn7.bias"),  # files saved without MXNet's arg:/aux: prefixes
        ("arg:linear1000_weight", None),
        ("arg:linear1000_bias", None),
    ],
)
def test_mxnet_names_convert_as_seam_does(mxnet: str, seam: str | None) -> None:
    assert mxnet_to_seam_key(mxnet) == seam


@pytest.mark.parametrize("name", ["arg:fc_weight", "arg:res2a_branch3_weight", "arg:bn1a_gamma", "aux:data"])
def test_names_outside_resnet38_are_not_converted(name: str) -> None:
    with pytest.raises(KeyError):
        mxnet_to_seam_key(name)


def test_the_191_backbone_tensors_have_unique_mxnet_names(source: CamNet) -> None:
    keys = [k for k in _backbone_state(source) if not k.endswith("num_batches_tracked")]
    names = [_mxnet_name(k) for k in keys]

    assert len(keys) == 191
    assert len(set(names)) == 191
    assert [mxnet_to_seam_key(n) for n in names] == keys


# --- files that load ------------------------------------------------------------------------------------------


def test_mxnet_params_fill_the_whole_backbone_and_drop_the_imagenet_classifier(
    mxnet_file: Path, source: CamNet
) -> None:
    model = _resnet38("daen")
    heads_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("fc8.", "csm."))}

    report = load_pretrained(model, mxnet_file)

    expected = {k: v for k, v in _backbone_state(source).items() if not k.endswith("num_batches_tracked")}
    _assert_tensors_equal(model, expected)
    _assert_tensors_equal(model, heads_before)  # heads stay at their initialisation
    assert report.file_kind == "mxnet"
    assert len(report.loaded) == 191
    assert report.ignored == ("arg:linear1000_weight", "arg:linear1000_bias")
    assert {k.split(".")[0] for k in report.left_at_init} == {"fc8", "f8_3", "f8_4", "f9", "csm"}
    assert "191 tensors from ilsvrc-cls_rna-a1_cls1000_ep-0001.params" in report.summary()
    assert "not used: linear1000" in report.summary()


def test_seam_layout_backbone_loads_with_its_batchnorm_counters(backbone_file: Path, source: CamNet) -> None:
    model = _resnet38("seam")

    report = load_pretrained(model, backbone_file)

    _assert_tensors_equal(model, _backbone_state(source))
    assert report.file_kind == "resnet38"
    assert len(report.loaded) == 191
    assert report.left_at_init == ("fc8.weight", "f8_3.weight", "f8_4.weight", "f9.weight")


def test_files_without_num_batches_tracked_load(tmp_path: Path, source: CamNet) -> None:
    # PyTorch 0.4.0, which SEAM targets, had no num_batches_tracked buffers.
    state = {k: v for k, v in _backbone_state(source).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    model = _resnet38("seam")

    assert len(load_pretrained(model, path).loaded) == 191
    _assert_tensors_equal(model, state)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda state: {f"module.{k}": v for k, v in state.items()},  # saved from DataParallel
        lambda state: {"state_dict": state, "epoch": 8},
        lambda state: {"model": {f"_orig_mod.{k}": v for k, v in state.items()}},  # torch.compile
    ],
    ids=["module-prefix", "state_dict-wrapper", "model-wrapper-compiled"],
)
def test_wrappers_and_prefixes_are_removed(
    tmp_path: Path, source: CamNet, wrap: Callable[[dict[str, torch.Tensor]], object]
) -> None:
    path = tmp_path / "wrapped.pth"
    torch.save(wrap(_backbone_state(source)), path)
    model = _resnet38("seam")

    load_pretrained(model, path)

    _assert_tensors_equal(model, _backbone_state(source))


def test_legacy_non_zip_serialisation_loads(tmp_path: Path, source: CamNet) -> None:
    path = tmp_path / "legacy.pth"
    torch.save(_backbone_state(source), path, _use_new_zipfile_serialization=False)
    model = _resnet38("seam")

    load_pretrained(model, path)

    _assert_tensors_equal(model, _backbone_state(source))


def test_full_seam_checkpoint_loads_heads_too(tmp_path: Path, source: CamNet) -> None:
    path = tmp_path / "seam.pth"
    torch.save(source.state_dict(), path)
    model = _resnet38("seam", num_classes=20)

    report = load_pretrained(model, path)

    _assert_tensors_equal(model, source.state_dict())
    assert report.file_kind == "seam"
    assert report.left_at_init == ()
    assert len(report.loaded) == 195


def test_full_seam_checkpoint_into_a_cam_model_leaves_out_the_pcm(tmp_path: Path, source: CamNet) -> None:
    path = tmp_path / "seam.pth"
    torch.save(source.state_dict(), path)
    model = _resnet38("cam", num_classes=20)

    report = load_pretrained(model, path)

    _assert_tensors_equal(model, {k: v for k, v in source.state_dict().items() if not k.startswith("f")})
    assert report.ignored == ("f8_3.weight", "f8_4.weight", "f9.weight")


def test_mlps_checkpoint_into_histosegnet_takes_the_backbone(tmp_path: Path) -> None:
    mlps = _randomised(_resnet38("cam", background_channel=False), seed=7)
    path = tmp_path / "stage1.pth"
    torch.save(mlps.state_dict(), path)
    model = build_model(variant="histosegnet", backbone="resnet38", width=WIDTH, input_normalisation="none")

    report = load_pretrained(model, path)

    _assert_tensors_equal(model, _backbone_state(mlps))
    assert report.ignored_layers == ("fc8",)  # HistoSegNet's dense head replaces fc8


@pytest.mark.parametrize("depth", [18, pytest.param(50, marks=pytest.mark.slow)])
def test_torchvision_resnet_loads_everything_but_fc(tmp_path: Path, depth: int) -> None:
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    _randomised(reference, seed=3)  # type: ignore[arg-type]
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(reference.state_dict(), path)
    model = build_model(variant="cam", backbone=f"resnet{depth}", num_classes=4)

    report = load_pretrained(model, path)

    _assert_tensors_equal(model, {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")})
    assert report.file_kind == "torchvision"
    assert report.description == f"a torchvision ResNet-{depth} state dict"
    assert report.ignored == ("fc.weight", "fc.bias")
    assert report.left_at_init == ("fc8.weight",)


def test_mlps_weights_into_a_normalising_model_warn(
    tmp_path: Path, source: CamNet, caplog: pytest.LogCaptureFixture
) -> None:
    mlps = _randomised(_resnet38("cam", background_channel=False), seed=4)
    path = tmp_path / "stage1_checkpoint_trained_on_luad.pth"
    torch.save(mlps.state_dict(), path)
    model = _resnet38("cam", background_channel=False)

    with caplog.at_level(logging.WARNING, logger="histo_daen.models.weights"):
        report = load_pretrained(model, path)

    assert report.file_kind == "mlps"
    assert "input_normalisation='none'" in caplog.text


# --- files that do not fit the model -------------------------------------------------------------------------


def test_another_width_names_the_first_tensors_that_differ(backbone_file: Path) -> None:
    model = _resnet38("seam", width=2 * WIDTH)

    with pytest.raises(
        WeightsError,
        match=r"resnet38_backbone\.pth: has backbone tensors of other shapes than the model \(backbone=resnet38, "
        r"width=0\.125\): conv1a\.weight \(4, 3, 3, 3\) in the file, \(8, 3, 3, 3\) in the model.*width=1\.0",
    ):
        load_pretrained(model, backbone_file)


def test_resnet38_weights_for_a_torchvision_backbone(backbone_file: Path) -> None:
    model = build_model(variant="cam", backbone="resnet18", width=0.25)

    with pytest.raises(
        WeightsError,
        match=r"resnet38_backbone\.pth: holds a ResNet38 backbone state dict .* but the model's backbone is "
        r"ResNet-18 \(backbone=resnet18",
    ):
        load_pretrained(model, backbone_file)


def test_torchvision_resnet50_weights_for_resnet18(tmp_path: Path) -> None:
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    model = build_model(variant="cam", backbone="resnet18", width=0.25)

    with pytest.raises(WeightsError, match=r"resnet50\.pth: holds a torchvision ResNet-50 state dict, but .*ResNet-18"):
        load_pretrained(model, path)


def test_torchvision_weights_for_resnet38(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(build_model(variant="cam", backbone="resnet18", width=0.25).state_dict(), path)

    with pytest.raises(WeightsError, match=r"resnet18\.pth: holds a torchvision ResNet-18 state dict, but .*ResNet38"):
        load_pretrained(_resnet38(), path)


def test_a_backbone_with_missing_tensors_names_them(tmp_path: Path, source: CamNet) -> None:
    state = _backbone_state(source)
    del state["b4_2.conv_branch2a.weight"], state["bn7.running_var"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    model = _resnet38("seam")

    with pytest.raises(
        WeightsError,
        match=r"partial\.pth: lacks 2 of the model's 228 backbone tensors: b4_2\.conv_branch2a\.weight, "
        r"bn7\.running_var",
    ):
        load_pretrained(model, path)
    report = load_pretrained(model, path, strict=False)
    assert "b4_2.conv_branch2a.weight" in report.left_at_init
    assert len(report.loaded) == 189


def test_a_classifier_of_another_class_count(tmp_path: Path, source: CamNet) -> None:
    path = tmp_path / "seam_voc.pth"
    torch.save(source.state_dict(), path)  # fc8: 21 outputs (VOC: background + 20)
    model = _resnet38("seam", num_classes=4)  # fc8: 5 outputs
    fc8_before = model.fc8.weight.clone()

    with pytest.raises(
        WeightsError,
        match=r"seam_voc\.pth: has heads of other shapes: fc8\.weight \(21, 256, 1, 1\) in the file, "
        r"\(5, 256, 1, 1\) in the model\. To take a checkpoint with its own classes use histo-daen import-checkpoint",
    ):
        load_pretrained(model, path)
    report = load_pretrained(model, path, strict=False)

    assert torch.equal(model.fc8.weight, fc8_before)
    assert "fc8.weight" in report.ignored
    _assert_tensors_equal(model, {k: v for k, v in source.state_dict().items() if not k.startswith("fc8.")})


def test_keys_no_model_has_are_named(tmp_path: Path, source: CamNet) -> None:
    state = source.state_dict() | {"csm.ca.fc1.weight": torch.zeros(1), "aux_head.weight": torch.zeros(1)}
    path = tmp_path / "daen_authors.pth"
    torch.save(state, path)
    model = _resnet38("seam", num_classes=20)

    with pytest.raises(WeightsError, match=r"has keys the model does not: csm\.ca\.fc1\.weight, aux_head\.weight"):
        load_pretrained(model, path)
    assert "aux_head.weight" in load_pretrained(model, path, strict=False).ignored


def test_an_mxnet_file_with_a_foreign_parameter(tmp_path: Path, source: CamNet) -> None:
    arrays = {_mxnet_name(k): v.numpy() for k, v in _backbone_state(source).items() if "num_batches" not in k}
    arrays["arg:bn1a_gamma"] = np.ones(4, np.float32)
    path = _write_mxnet(tmp_path / "other.params", arrays)

    with pytest.raises(WeightsError, match=r"other\.params: has parameters that are not in ResNet38: arg:bn1a_gamma"):
        load_pretrained(_resnet38(), path)


def test_non_finite_values_are_refused(tmp_path: Path, source: CamNet) -> None:
    state = _backbone_state(source)
    state["b3.bn_branch2a.running_var"][0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(state, path)

    with pytest.raises(WeightsError, match=r"nan\.pth: holds NaN or infinite values in b3\.bn_branch2a\.running_var"):
        load_pretrained(_resnet38(), path)


# --- files that are not weights ------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"nothere\.pth: does not exist\. .*nothing is downloaded"):
        load_pretrained(_resnet38(), tmp_path / "nothere.pth")


def test_folder(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"is a folder, not a weights file"):
        load_pretrained(_resnet38(), tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_pth(backbone_file: Path, keep: float) -> None:
    data = backbone_file.read_bytes()
    backbone_file.write_bytes(data[: int(len(data) * keep)])

    with pytest.raises(WeightsError, match=r"resnet38_backbone\.pth: is truncated or corrupt.*copy the file again"):
        load_pretrained(_resnet38(), backbone_file)


def test_truncated_mxnet_params(mxnet_file: Path) -> None:
    data = mxnet_file.read_bytes()
    mxnet_file.write_bytes(data[: len(data) // 2])

    with pytest.raises(WeightsError, match=r"ep-0001\.params: is not a readable MXNet NDArray file: .*truncated"):
        load_pretrained(_resnet38(), mxnet_file)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            b"\x80" + np.random.default_rng(5).integers(0, 256, 8192, dtype=np.uint8).tobytes(),
            "is truncated or corrupt",
        ),
        (b"", r"is empty \(0 bytes\)"),
        (b"epoch 8, loss 0.31\n", r"is not a PyTorch weights file \(neither a zip archive nor a pickle\)"),
    ],
    ids=["random-bytes", "empty", "text"],
)
def test_files_that_are_not_pytorch(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(content)

    with pytest.raises(WeightsError, match=rf"weights\.pth: {problem}"):
        load_pretrained(_resnet38(), path)


def test_random_bytes_named_params(tmp_path: Path) -> None:
    path = tmp_path / "weights.params"
    path.write_bytes(np.random.default_rng(6).integers(0, 256, 4096, dtype=np.uint8).tobytes())

    with pytest.raises(WeightsError, match=r"weights\.params: is not an MXNet NDArray file"):
        load_pretrained(_resnet38(), path)


def test_a_pickle_weights_only_refuses(tmp_path: Path, source: CamNet) -> None:
    path = tmp_path / "with_args.pth"
    torch.save({"state_dict": _backbone_state(source), "args": argparse.Namespace(lr=0.01)}, path)

    with pytest.raises(
        WeightsError,
        match=r"with_args\.pth: holds Python objects \(argparse\.Namespace\) that safe loading .* refuses.*"
        r"torch\.save\(model\.state_dict\(\)",
    ):
        load_pretrained(_resnet38(), path)


def test_the_backbone_of_a_histo_daen_checkpoint_seeds_another_variant(tmp_path: Path) -> None:
    """A plain CAM classifier trained first gives DAEN its backbone (what the demo does instead of ImageNet)."""
    torch.manual_seed(3)
    cam = _randomised(_resnet38("cam", background_channel=False), seed=3)
    path = save_checkpoint(tmp_path / "last.pt", checkpoint_state(cam))
    daen = _resnet38("daen")
    heads_before = {k: v.clone() for k, v in daen.state_dict().items() if k.split(".")[0] in ("fc8", "csm", "f9")}

    report = load_pretrained(daen, path)

    assert torch.equal(daen.state_dict()["b4_5.conv_branch2a.weight"], cam.state_dict()["b4_5.conv_branch2a.weight"])
    assert torch.equal(daen.state_dict()["bn7.running_var"], cam.state_dict()["bn7.running_var"])
    assert all(torch.equal(daen.state_dict()[k], v) for k, v in heads_before.items())  # heads stay at their init
    assert not any(k.startswith(("fc8", "csm")) for k in report.loaded)


def test_a_state_dict_of_another_network(tmp_path: Path) -> None:
    path = tmp_path / "vit.pth"
    torch.save({"patch_embed.proj.weight": torch.zeros(2), "blocks.0.attn.qkv.weight": torch.zeros(2)}, path)

    with pytest.raises(WeightsError, match=r"vit\.pth: holds neither ResNet38 nor torchvision ResNet weights"):
        load_pretrained(_resnet38(), path)


def test_a_dict_with_entries_that_are_not_tensors(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pth"
    torch.save({"conv1a.weight": torch.zeros(4, 3, 3, 3), "lr": 0.01}, path)

    with pytest.raises(WeightsError, match=r"mixed\.pth: has entries that are not tensors: lr"):
        read_weights_file(path)


# --- what a weights file says about its use (like torchvision's Weights.meta) ------------------------------------


def test_each_file_kind_carries_how_it_was_trained(mxnet_file: Path, backbone_file: Path, tmp_path: Path) -> None:
    assert read_weights_file(mxnet_file).meta.input_normalisation == "imagenet"
    assert read_weights_file(backbone_file).meta.input_normalisation == "imagenet"
    ours = _resnet38("cam", background_channel=False, input_normalisation="none")
    path = save_checkpoint(tmp_path / "last.pt", checkpoint_state(ours))
    meta = read_weights_file(path).meta
    assert meta.input_normalisation == "none" and meta.classes == ("TE", "NEC", "LYM", "TAS")


def test_weights_trained_on_other_input_are_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ours = _resnet38("cam", background_channel=False, input_normalisation="none")
    path = save_checkpoint(tmp_path / "last.pt", checkpoint_state(ours))
    with caplog.at_level(logging.WARNING, logger="histo_daen.models.weights"):
        load_pretrained(_resnet38("daen"), path)
    assert "trained on un-normalised [0, 1] input; this model's input_normalisation is 'imagenet'" in caplog.text


def test_any_variant_lends_only_its_backbone(tmp_path: Path) -> None:
    """The heads of the lending checkpoint (here HistoSegNet's dense head) are never loaded, whatever they are."""
    lender = _randomised(_resnet38("histosegnet", background_channel=False), seed=4)
    path = save_checkpoint(tmp_path / "last.pt", checkpoint_state(lender))
    daen = _resnet38("daen")
    report = load_pretrained(daen, path)
    assert torch.equal(daen.state_dict()["b4_5.conv_branch2a.weight"], lender.state_dict()["b4_5.conv_branch2a.weight"])
    assert {"fc_hidden", "fc_out"} <= set(report.ignored_layers)
    assert report.file_kind == "histo-daen"
