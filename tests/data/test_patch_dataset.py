from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from histo_daen.config.schema import AugmentConfig
from histo_daen.data.luad import check_luad
from histo_daen.data.patch_dataset import PatchDataset, loader_batches
from histo_daen.data.transforms import PatchAugment


def test_training_item_is_an_rgb_tensor_in_unit_range_with_its_label(luad_folder: Path) -> None:
    records = check_luad(luad_folder)["train"]
    item = PatchDataset(records, n_classes=4)[0]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert float(item["image"].max()) <= 1.0 and float(item["image"].min()) >= 0.0
    assert item["label"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert item["label_from_name"] is True and "mask" not in item


def test_unlabelled_val_patch_takes_its_label_from_the_mask(luad_folder: Path) -> None:
    records = check_luad(luad_folder)["val"]
    item = PatchDataset(records, n_classes=4, with_masks=True)[0]
    assert item["label"].tolist() == [1.0, 0.0, 1.0, 0.0]  # mask holds 0, 2 and 4 (exclude, not a class)
    assert item["label_from_name"] is False
    assert item["mask"].dtype == torch.int64 and set(item["mask"].unique().tolist()) == {0, 2, 4}


def test_augmentation_is_keyed_by_epoch_and_index(luad_folder: Path) -> None:
    records = check_luad(luad_folder)["val"]
    # A mask with a distinct value per quadrant shows which flip/turn was applied.
    dataset = PatchDataset(records, n_classes=4, augment=PatchAugment(AugmentConfig(colour="none")), with_masks=True)
    draws = {epoch: dataset[(epoch, 0)]["mask"] for epoch in range(8)}
    assert torch.equal(dataset[(3, 0)]["mask"], draws[3])  # same key, same patch
    assert len({tuple(m.flatten().tolist()) for m in draws.values()}) > 1  # other epochs, other draws


def test_input_scale_resizes_image_and_mask(luad_folder: Path) -> None:
    records = check_luad(luad_folder)["test"]
    item = PatchDataset(records, n_classes=4, input_scale=2.0, with_masks=True)[1]
    assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (32, 32)


def test_labels_returns_the_label_matrix(luad_folder: Path) -> None:
    records = check_luad(luad_folder)["train"]
    labels = PatchDataset(records, n_classes=4).labels()
    assert labels.dtype == np.uint8
    assert labels.tolist() == [[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1]]


def test_loader_batches_stops_the_loaders_workers_when_the_block_ends(luad_folder: Path) -> None:
    records = check_luad(luad_folder)["train"]
    loader = DataLoader(PatchDataset(records, n_classes=4), batch_size=2, num_workers=2)
    with loader_batches(loader) as batches:
        assert next(batches)["image"].shape[0] == 2
        assert len(multiprocessing.active_children()) == 2  # the workers, before the epoch is over
    assert multiprocessing.active_children() == []  # joined here, not whenever the iterator is collected
