from __future__ import annotations

from pathlib import Path

import pytest

from histo_daen.config.schema import DataConfig
from histo_daen.data.registry import dataset_names, dataset_spec, load_splits
from histo_daen.errors import ConfigError


def test_registry_lists_luad_and_bcss() -> None:
    assert {"luad", "bcss"} <= set(dataset_names())
    assert dataset_spec("luad").class_set.codes == ("TE", "NEC", "LYM", "TAS")
    assert dataset_spec("bcss").class_set.codes == ("TUM", "STR", "LYM", "NEC")


def test_unknown_dataset_suggests_the_nearest_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'lua'. Did you mean 'luad'\? Valid: luad, bcss"):
        dataset_spec("lua")


def test_load_splits_needs_a_root() -> None:
    with pytest.raises(ConfigError, match=r"data.root: no dataset folder given for LUAD-HistoSeg; pass --data-root"):
        load_splits(DataConfig())


def test_load_splits_returns_only_the_requested_splits(luad_folder: Path) -> None:
    records = load_splits(DataConfig(root=luad_folder), ("train", "test"))
    assert set(records) == {"train", "test"} and len(records["test"]) == 2
