from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from histo_daen.atomic import partial_dir_for
from histo_daen.data.luad import check_luad
from histo_daen.data.masks import read_mask
from histo_daen.data.synthetic_dataset import synthetic_patch, write_synthetic_luad
from histo_daen.errors import OutputExistsError


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "LUAD-synth"
    return write_synthetic_luad(root, n_train=6, n_val=3, n_test=2, seed=5, patch_size=64, workers=1).root


def test_synthetic_dataset_passes_the_luad_folder_check(synthetic_root: Path) -> None:
    records = check_luad(synthetic_root)
    assert [len(records[s]) for s in ("train", "val", "test")] == [6, 3, 2]
    assert all(r.label is not None and any(r.label) for r in records["train"])
    assert (synthetic_root / "Readme.txt").exists() and (synthetic_root / "synthetic_dataset.json").exists()


def test_synthetic_masks_are_palette_pngs_with_tissue_and_glass_indices(synthetic_root: Path) -> None:
    masks = [read_mask(p) for p in sorted((synthetic_root / "val" / "mask").glob("*.png"))]
    values = set(np.unique(np.concatenate([m.ravel() for m in masks])).tolist())
    assert values <= {0, 1, 2, 3, 4} and values & {0, 1, 2, 3}


def test_patch_label_is_exactly_the_classes_in_its_mask() -> None:
    for key in range(12):
        patch = synthetic_patch(np.random.default_rng([9, key]), patch_size=64, min_class_fraction=0.03)
        counts = np.bincount(patch.mask.ravel(), minlength=5)
        assert patch.label == tuple(int(c > 0) for c in counts[:4])
        assert all(c >= 0.03 * 64 * 64 for c in counts[:4] if c > 0)  # every labelled class is visible
        assert 1 <= sum(patch.label) <= 3


def test_same_seed_writes_identical_files(tmp_path: Path, synthetic_root: Path) -> None:
    again = write_synthetic_luad(tmp_path / "again", n_train=6, n_val=3, n_test=2, seed=5, patch_size=64, workers=1)
    assert _digest(again.root) == _digest(synthetic_root)


def test_another_seed_writes_other_patches(tmp_path: Path, synthetic_root: Path) -> None:
    other = write_synthetic_luad(tmp_path / "other", n_train=6, n_val=3, n_test=2, seed=6, patch_size=64, workers=1)
    assert _digest(other.root) != _digest(synthetic_root)


def test_existing_output_is_refused_without_overwrite(synthetic_root: Path) -> None:
    before = _digest(synthetic_root)
    with pytest.raises(OutputExistsError, match=r"LUAD-synth: exists and is not empty\. Pass --overwrite"):
        write_synthetic_luad(synthetic_root, n_train=1, n_val=0, n_test=0, patch_size=64, workers=1)
    assert _digest(synthetic_root) == before


def test_interrupted_generation_resumes_to_the_same_files(tmp_path: Path, synthetic_root: Path) -> None:
    target = tmp_path / "resumed"
    partial = partial_dir_for(target)
    write_synthetic_luad(partial, n_train=3, n_val=1, n_test=0, seed=5, patch_size=64, workers=1)  # a killed run
    (partial / "Readme.txt").unlink()
    write_synthetic_luad(target, n_train=6, n_val=3, n_test=2, seed=5, patch_size=64, workers=1)
    assert _digest(target) == _digest(synthetic_root)
