"""Checkpoints: a round trip rebuilds the same network; every kind of bad file gets its own clear error."""

from __future__ import annotations

import argparse
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from histo_daen import __version__
from histo_daen.config import ModelConfig
from histo_daen.errors import CheckpointError
from histo_daen.models import CamNet, build_model
from histo_daen.models.checkpoint import (
    FORMAT_VERSION,
    checkpoint_state,
    load_model,
    read_checkpoint,
    restore_weights,
    save_checkpoint,
    strip_wrapper_prefixes,
    unwrap_model,
)

TINY = ModelConfig(variant="daen", backbone="resnet18", width=0.125)


@pytest.fixture
def model() -> CamNet:
    net = build_model(TINY)
    assert isinstance(net, CamNet)
    return net


@pytest.fixture
def saved(tmp_path: Path, model: CamNet) -> Path:
    state = checkpoint_state(model, config={"model": {"variant": "daen"}, "train": {"lr": 0.01}}, epoch=3, step=42)
    return save_checkpoint(tmp_path / "run" / "last.pt", state | {"metrics": {"loss": 0.5}})


def test_round_trip_rebuilds_the_same_network(saved: Path, model: CamNet) -> None:
    loaded = load_model(saved, device="cpu")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = model.eval()(x), loaded.model(x)
    for name in ("logits", "cams", "cams_refined", "background_refined"):
        assert torch.equal(getattr(expected, name), getattr(got, name)), name
    assert not loaded.model.training
    assert loaded.model_config == TINY.with_reference_choices()  # a built network has every choice made
    assert loaded.classes == ("TE", "NEC", "LYM", "TAS")
    assert loaded.config == {"model": {"variant": "daen"}, "train": {"lr": 0.01}}
    assert (loaded.state["epoch"], loaded.state["step"], loaded.state["metrics"]) == (3, 42, {"loss": 0.5})
    assert "state_dict" not in loaded.state


def test_saved_file_records_format_and_version(saved: Path) -> None:
    checkpoint = read_checkpoint(saved)
    assert checkpoint["format_version"] == FORMAT_VERSION
    assert checkpoint["histo_daen_version"] == __version__
    assert checkpoint["model_config"]["backbone"] == "resnet18"
    assert "conv1.weight" in checkpoint["state_dict"] and "fc8.weight" in checkpoint["state_dict"]


def test_wrapped_models_are_saved_without_wrapper_prefixes(tmp_path: Path, model: CamNet) -> None:
    wrapped = torch.compile(nn.DataParallel(model))  # compiles lazily: wrapping costs nothing until a forward
    assert unwrap_model(wrapped) is model
    assert "_orig_mod.module.conv1.weight" in wrapped.state_dict()
    path = save_checkpoint(tmp_path / "ddp.pt", checkpoint_state(wrapped))
    assert "conv1.weight" in read_checkpoint(path)["state_dict"]


def test_a_bare_model_is_its_own_unwrapped_model() -> None:
    holder = nn.Sequential()
    holder.module = nn.Linear(2, 2)  # a child that happens to be called "module" is no wrapper
    assert unwrap_model(holder) is holder


def test_prefixed_state_dicts_load_into_a_bare_model(model: CamNet) -> None:
    prefixed = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    assert set(strip_wrapper_prefixes(prefixed)) == set(model.state_dict())
    target = build_model(TINY)
    restore_weights(target, {"state_dict": prefixed}, path="x.pt")
    assert torch.equal(target.fc8.weight, model.fc8.weight)


def test_a_failed_save_leaves_the_previous_checkpoint_intact(saved: Path, model: CamNet) -> None:
    before = saved.read_bytes()
    with pytest.raises(TypeError, match=r"checkpoint entry metrics\['curve'\] is a ndarray"):
        save_checkpoint(saved, checkpoint_state(model, metrics={"curve": np.zeros(3)}))
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["last.pt"]


def test_missing_entries_are_a_bug_in_the_caller(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="checkpoint state lacks state_dict"):
        save_checkpoint(tmp_path / "x.pt", {"model_config": TINY, "classes": [], "epoch": 0, "step": 0})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nothing\.pt: does not exist\. Check the path"):
        read_checkpoint(tmp_path / "nothing.pt")


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"is a folder, not a checkpoint file\. Pass a \.pt file"):
        load_model(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_file(saved: Path, keep: float) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=r"last\.pt: is truncated or corrupt .*Use an earlier checkpoint"):
        read_checkpoint(saved)


def test_empty_file(saved: Path) -> None:
    saved.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"last\.pt: is empty \(0 bytes\)\. Use an earlier checkpoint"):
        read_checkpoint(saved)


def test_text_file_named_pt(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint\n")
    with pytest.raises(
        CheckpointError, match=r"notes\.pt: is not a PyTorch checkpoint file \(neither a zip archive nor"
    ):
        read_checkpoint(path)


def test_bare_state_dict_is_pointed_to_load_pretrained(tmp_path: Path, model: CamNet) -> None:
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"weights\.pth: holds a bare state dict.*load_pretrained"):
        read_checkpoint(path)


def test_other_dicts_are_not_histo_daen_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"epoch": 3, "net": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match=r"other\.pt: is not a histo-daen checkpoint .*found epoch, net"):
        read_checkpoint(path)


@pytest.mark.parametrize("payload", [{"args": argparse.Namespace(lr=0.1)}, {"array": np.zeros(2)}])
def test_pickles_that_weights_only_refuses(tmp_path: Path, payload: dict[str, object]) -> None:
    path = tmp_path / "unsafe.pt"
    torch.save(payload, path)
    with pytest.raises(
        CheckpointError, match=r"unsafe\.pt: holds Python objects \((argparse|numpy)\..*\) that safe loading"
    ):
        read_checkpoint(path)


def test_plain_pickle_from_another_tool(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pkl"
    path.write_bytes(pickle.dumps({"model": argparse.Namespace()}, protocol=4))
    with pytest.raises(CheckpointError, match=r"legacy\.pkl: holds Python objects \(argparse\.Namespace\) that safe"):
        read_checkpoint(path)


def test_checkpoint_from_a_newer_format(saved: Path) -> None:
    checkpoint = read_checkpoint(saved)
    torch.save(checkpoint | {"format_version": FORMAT_VERSION + 1, "histo_daen_version": "9.0"}, saved)
    with pytest.raises(CheckpointError, match=r"written by a newer histo-daen \(9\.0, checkpoint format 2;.*Upgrade"):
        load_model(saved)


def test_another_model_config_names_every_differing_field(saved: Path) -> None:
    requested = ModelConfig(variant="seam", backbone="resnet18", width=0.25)
    with pytest.raises(CheckpointError) as caught:
        load_model(saved, expected=requested)
    message = str(caught.value)
    assert "variant: stored 'daen', requested 'seam'" in message
    assert "width: stored 0.125, requested 0.25" in message
    assert "backbone" not in message  # equal fields are not listed
    assert message.endswith("the checkpoint's own model config is used to rebuild the model.")


def test_the_same_config_is_accepted(saved: Path) -> None:
    assert load_model(saved, expected=TINY).model_config == TINY.with_reference_choices()


def test_a_choice_left_to_the_start_accepts_the_checkpoints_but_a_named_one_must_match(saved: Path) -> None:
    assert TINY.attention_form is None  # left to the training start: the stored "reference" is accepted
    with pytest.raises(CheckpointError, match=r"attention_form: stored 'reference', requested 'residual'"):
        load_model(saved, expected=replace(TINY, attention_form="residual"))


def test_weights_that_do_not_fit_the_stored_config(saved: Path) -> None:
    checkpoint = read_checkpoint(saved)
    checkpoint["model_config"]["width"] = 0.25  # claims a wider network than its tensors
    torch.save(checkpoint, saved)
    with pytest.raises(CheckpointError, match=r"weights that do not fit its model config \(wrong shape: conv1\.weight"):
        load_model(saved)


def test_unknown_model_config_key(saved: Path) -> None:
    checkpoint = read_checkpoint(saved)
    checkpoint["model_config"]["depth_multiplier"] = 2
    torch.save(checkpoint, saved)
    with pytest.raises(CheckpointError, match=r"holds a model config this version cannot use .*depth_multiplier"):
        load_model(saved)


def test_weights_with_nan_are_never_written_and_the_previous_file_stays(saved: Path, model: CamNet) -> None:
    before = saved.read_bytes()
    with torch.no_grad():
        model.fc8.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match=r"was not written: the weights hold NaN or inf \(fc8\.weight: 1 of "):
        save_checkpoint(saved, checkpoint_state(model))
    assert saved.read_bytes() == before and not list(saved.parent.glob(".tmp-*"))


def test_a_checkpoint_with_inf_weights_is_refused_on_load(tmp_path: Path, model: CamNet) -> None:
    with torch.no_grad():
        model.fc8.weight[0, 0] = float("inf")
    path = tmp_path / "diverged.pt"
    torch.save({**checkpoint_state(model), "format_version": FORMAT_VERSION, "histo_daen_version": "0"}, path)
    with pytest.raises(CheckpointError, match=r"holds weights with NaN or inf \(fc8\.weight: 1 of \d+ tensors\)"):
        load_model(path)
