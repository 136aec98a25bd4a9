"""Fixtures for the evaluation tests: a tiny LUAD-format dataset of flat colours, and tiny checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from histo_daen.classes import LUAD
from histo_daen.data.masks import write_mask
from histo_daen.models import build_model, checkpoint_state, save_checkpoint

# One flat, clearly non-white colour per class (grey levels 60-180), so a colour lookup is a perfect segmenter.
CLASS_RGB = ((120, 40, 120), (230, 150, 180), (40, 40, 140), (200, 120, 60))
WHITE = (250, 250, 250)
SIDE = 32


def _patch(left: int, right: int, *, glass_rows: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A patch whose left half is class ``left`` and right half class ``right``; the top rows glass (exclude)."""
    mask = np.empty((SIDE, SIDE), dtype=np.uint8)
    mask[:, : SIDE // 2] = left
    mask[:, SIDE // 2 :] = right
    mask[:glass_rows] = LUAD.exclude_index
    palette = np.array([*CLASS_RGB, WHITE], dtype=np.uint8)
    return palette[mask], mask


# (name, left class, right class, glass rows) of the val/test patches.
LABELLED_PATCHES = (
    ("p1-0-0", 0, 1, 0),
    ("p1-32-0", 2, 3, 8),
    ("p2-0-0", 3, 3, 0),
    ("p2-32-0", 1, 2, 4),
)


def write_tiny_luad(root: Path) -> Path:
    """LUAD-HistoSeg layout: train/ with labelled names, val/ and test/ with img/ and mask/ (palette PNGs)."""
    for name, left, right, _ in LABELLED_PATCHES:
        image, _mask = _patch(left, right)
        label = " ".join("1" if c in (left, right) else "0" for c in range(4))
        (root / "train").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "train" / f"{name}-[{label}].png")
    for split in ("val", "test"):
        for name, left, right, glass in LABELLED_PATCHES:
            image, mask = _patch(left, right, glass_rows=glass)
            (root / split / "img").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / split / "img" / f"{name}.png")
            write_mask(root / split / "mask" / f"{name}.png", mask, LUAD)
    return root


@pytest.fixture
def tiny_luad(tmp_path: Path) -> Path:
    """A fresh copy per test (some tests break it)."""
    return write_tiny_luad(tmp_path / "LUAD")


def write_tiny_checkpoint(path: Path, variant: str = "cam") -> Path:
    """A randomly initialised reduced-width network saved as a histo-daen checkpoint."""
    torch.manual_seed(0)
    model = build_model(variant=variant, backbone="resnet18", width=0.125, freeze_batchnorm=False)
    return save_checkpoint(path, checkpoint_state(model, epoch=1, step=3))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("runs") / "last.pt")
