from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histo_daen.classes import BCSS, LUAD
from histo_daen.data.masks import read_mask, write_mask
from histo_daen.errors import DatasetError


def test_palette_mask_round_trip_keeps_indices_including_exclude(tmp_path: Path) -> None:
    # Pillow re-packs palette indices of a P image saved without a palette; 0, 1, 4 must not come back as 0, 1, 2.
    mask = np.array([[0, 1, 4], [4, 4, 1]], dtype=np.uint8)
    path = write_mask(tmp_path / "m.png", mask, LUAD)
    assert np.array_equal(read_mask(path), mask)


def test_written_mask_carries_the_dataset_palette(tmp_path: Path) -> None:
    path = write_mask(tmp_path / "m.png", np.array([[0, 3, 4]], dtype=np.uint8), BCSS)
    with Image.open(path) as image:
        assert image.mode == "P"
        rgb = np.asarray(image.convert("RGB"))
    assert rgb[0].tolist() == [list(BCSS.classes[0].colour), list(BCSS.classes[3].colour), [255, 255, 255]]


def test_write_mask_refuses_values_outside_the_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"mask values must be in \[0, 4\]"):
        write_mask(tmp_path / "m.png", np.array([[0, 5]], dtype=np.uint8), LUAD)
    assert not (tmp_path / "m.png").exists()


def test_read_mask_refuses_colour_masks(tmp_path: Path) -> None:
    path = tmp_path / "colour.png"
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(path)
    with pytest.raises(DatasetError, match=r"colour\.png: mask is an RGB image.*convert colour masks"):
        read_mask(path)


def test_read_mask_names_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"broken\.png: cannot be read as a PNG mask"):
        read_mask(path)
