"""Fixtures for the data tests: LUAD-HistoSeg-format folders written file by file, valid or broken on purpose."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histo_daen.classes import LUAD
from histo_daen.data.masks import write_mask

SIDE = 16


def write_png(path: Path, *, value: int = 128, side: int = SIDE) -> Path:
    """A flat RGB PNG (content does not matter to the folder checks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((side, side, 3), value, dtype=np.uint8)).save(path)
    return path


def write_luad_folder(root: Path, *, train: int = 3, val: int = 2, test: int = 2, train_dir: str = "train") -> Path:
    """A valid LUAD-HistoSeg folder: labelled training names, val/test images paired with palette masks."""
    for i in range(train):
        label = " ".join("1" if c in (i % 4, 3) else "0" for c in range(4))
        write_png(root / train_dir / f"100{i}-{i * 224}-0-[{label}].png", value=40 * i)
    for split, count in (("val", val), ("test", test)):
        for i in range(count):
            name = f"200{i}-{i * 224}-448.png"
            write_png(root / split / "img" / name)
            mask = np.zeros((SIDE, SIDE), dtype=np.uint8)
            mask[:, SIDE // 2 :] = 2
            mask[:4] = LUAD.exclude_index
            write_mask(root / split / "mask" / name, mask, LUAD)
    return root


@pytest.fixture
def luad_folder(tmp_path: Path) -> Path:
    """A fresh valid LUAD-HistoSeg folder per test (tests break it on purpose)."""
    return write_luad_folder(tmp_path / "LUAD-HistoSeg")


@pytest.fixture
def make_png() -> Callable[..., Path]:
    return write_png
