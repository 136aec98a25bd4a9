"""The overview picture: labels sampled onto the thumbnail, colours blended on tissue only, a PNG written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histo_daen.classes import LUAD
from histo_daen.export.overlay import label_thumbnail, overlay_labels, write_overview


def test_label_thumbnail_samples_the_map_at_thumbnail_pixel_centres(make_map, quadrant_labels) -> None:
    # The map (64 x 80 px, 16 level-0 px each) of a 1280 x 1024 slide, shown in a 40 x 32 thumbnail (ds 32).
    tissue_map = make_map(quadrant_labels, pyramid_levels=1)
    labels = label_thumbnail(tissue_map, (32, 40), slide_size_wh=(1280, 1024))
    assert labels.shape == (32, 40)
    assert np.array_equal(labels, quadrant_labels[1::2, 1::2])


def test_label_thumbnail_uses_a_coarser_level_when_it_is_fine_enough(make_map, quadrant_labels) -> None:
    tissue_map = make_map(quadrant_labels, pyramid_levels=3)
    labels = label_thumbnail(tissue_map, (16, 20), slide_size_wh=(1280, 1024))  # 64 level-0 px per pixel: s2
    assert np.array_equal(labels, tissue_map.labels(2)[:])


def test_overlay_blends_class_colours_on_tissue_only() -> None:
    thumbnail = np.full((2, 2, 3), 200, dtype=np.uint8)
    labels = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    colours = {cls.map_value: cls.colour for cls in LUAD.classes}
    blended = overlay_labels(thumbnail, labels, colours, opacity=0.5)
    assert blended[0, 0].tolist() == [200, 200, 200]
    assert blended[0, 1].tolist() == [round((200 + 205) / 2), round((200 + 51) / 2), round((200 + 51) / 2)]
    assert blended[1, 0].tolist() == [100, round((200 + 255) / 2), 100]


def test_overlay_refuses_mismatched_sizes() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        overlay_labels(np.zeros((2, 2, 3), np.uint8), np.zeros((3, 2), np.uint8), {}, opacity=0.5)


def test_write_overview_writes_the_same_png_twice(make_map, quadrant_labels, tmp_path: Path) -> None:
    tissue_map = make_map(quadrant_labels)
    thumbnail = np.full((64, 80, 3), 230, dtype=np.uint8)
    first = write_overview(thumbnail, tissue_map, tmp_path / "a.png", slide_size_wh=(1280, 1024), title="slide")
    second = write_overview(thumbnail, tissue_map, tmp_path / "b.png", slide_size_wh=(1280, 1024), title="slide")
    with Image.open(first) as image:
        assert image.format == "PNG" and image.width > image.height
    assert first.read_bytes() == second.read_bytes()
    assert not list(tmp_path.glob(".tmp-*"))
