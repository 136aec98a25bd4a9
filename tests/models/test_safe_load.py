"""The one torch.load: checkpoints and weights files fail alike, and refused objects are named, whatever the format."""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from histo_daen.errors import CheckpointError, WeightsError
from histo_daen.models.checkpoint import read_checkpoint
from histo_daen.models.safe_load import refused_globals
from histo_daen.models.weights import read_weights_file


def _zip_with_namespace(path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, path)


def _old_format_with_namespace(path: Path) -> None:
    torch.save({"args": argparse.Namespace(lr=0.1)}, path, _use_new_zipfile_serialization=False)


def _plain_pickle_with_namespace(path: Path) -> None:
    path.write_bytes(pickle.dumps({"model": argparse.Namespace()}, protocol=4))


@pytest.mark.parametrize("write", [_zip_with_namespace, _old_format_with_namespace, _plain_pickle_with_namespace])
def test_refused_objects_are_named_in_every_file_format(tmp_path: Path, write) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "unsafe.pt"
    write(path)
    assert refused_globals(path) == ["argparse.Namespace"]
    with pytest.raises(CheckpointError, match=r"unsafe\.pt: holds Python objects \(argparse\.Namespace\) that safe"):
        read_checkpoint(path)


def test_numpy_arrays_are_named_too(tmp_path: Path) -> None:
    path = tmp_path / "arrays.pt"
    torch.save({"mean": np.zeros(3)}, path)
    assert "numpy.ndarray" in refused_globals(path)


def test_clean_files_refuse_nothing(tmp_path: Path) -> None:
    new, old = tmp_path / "new.pt", tmp_path / "old.pt"
    torch.save({"w": torch.zeros(2)}, new)
    torch.save({"w": torch.zeros(2)}, old, _use_new_zipfile_serialization=False)
    assert refused_globals(new) == [] and refused_globals(old) == []


@pytest.mark.parametrize(
    "content",
    [b"", b"epoch 8, loss 0.31\n", b"PK\x03\x04 a cut zip archive", b"\x80\x02 a cut pickle"],
    ids=["empty", "text", "cut-zip", "cut-pickle"],
)
def test_checkpoints_and_weights_files_fail_with_one_message(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "file.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as as_checkpoint:
        read_checkpoint(path)
    with pytest.raises(WeightsError) as as_weights:
        read_weights_file(path)
    # Same problem in the same words; only the noun and the "what to pass" hint differ.
    assert as_checkpoint.value.problem.replace("checkpoint file", "FILE") == as_weights.value.problem.replace(
        "weights file", "FILE"
    )
