"""write_synthetic_slide: real pyramids both libraries read, ground truth that matches the pixels, failure cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import histo_daen.data.synthetic_slide as synthetic_slide
from histo_daen.classes import LUAD
from histo_daen.data.synthetic_slide import (
    MARK_BUBBLE,
    MARK_INK,
    SyntheticSlide,
    map_palette,
    truncated_copy,
    write_synthetic_slide,
)
from histo_daen.data.synthetic_tissue import ADIPOSE_INDEX
from histo_daen.data.tissue_cases import write_tissue_case
from histo_daen.slide import open_slide


def test_svs_carries_the_aperio_header(tiny_slide: SyntheticSlide) -> None:
    with open_slide(tiny_slide.path, backend="openslide") as slide:
        assert slide.vendor == "aperio"
        assert slide.properties["aperio.AppMag"] == "20"
        assert slide.properties["openslide.objective-power"] == "20"
        assert float(slide.properties["openslide.mpp-x"]) == 0.5


def test_lossless_levels_are_2x2_means_of_level_0(tiny_tiff_slide: SyntheticSlide) -> None:
    with open_slide(tiny_tiff_slide.path) as slide:
        level0 = slide.read_region((0, 0), 0, (1024, 768)).astype(np.uint16)
        level1 = slide.read_region((0, 0), 1, (512, 384))
    means = (level0[0::2, 0::2] + level0[1::2, 0::2] + level0[0::2, 1::2] + level0[1::2, 1::2] + 2) // 4
    np.testing.assert_array_equal(level1, means.astype(np.uint8))


def test_odd_sizes_give_floor_halved_levels(tmp_path: Path) -> None:
    slide = write_synthetic_slide(tmp_path / "odd.svs", size_wh=(1503, 1001), levels=3, tissue="disc")
    with open_slide(slide.path) as opened:
        assert opened.level_dimensions == ((1503, 1001), (751, 500), (375, 250))
        assert opened.level_downsamples[1] == pytest.approx(2.0017, abs=1e-4)


def test_ground_truth_is_a_palette_png_of_map_values(tiny_slide: SyntheticSlide) -> None:
    mask = tiny_slide.read_mask()
    assert mask.shape == (96, 128) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1, 2, 3, 4} and (mask == 0).any() and (mask > 0).any()
    with Image.open(tiny_slide.mask_path) as image:
        assert image.mode == "P"
        palette = image.getpalette()[:15]
    assert palette[:3] == [255, 255, 255]
    assert palette[3 * LUAD.by_code("LYM").map_value : 3 * LUAD.by_code("LYM").map_value + 3] == [65, 105, 225]
    info = json.loads(tiny_slide.mask_info_path.read_text())
    assert info["downsample"] == 16 and info["values"] == {"0": "glass", "1": "TE", "2": "NEC", "3": "LYM", "4": "TAS"}
    assert map_palette()[:15] == palette


def test_ground_truth_matches_the_pixels(tiny_slide: SyntheticSlide) -> None:
    mask = tiny_slide.read_mask()
    with open_slide(tiny_slide.path) as slide:
        thumbnail = slide.downsampled(16).astype(float)  # the mask's grid
    saturation = (thumbnail.max(axis=2) - thumbnail.min(axis=2)) / thumbnail.max(axis=2)
    # Mask pixels whose 5 x 5 neighbourhood has one value: away from borders, where a pixel mixes two classes.
    interior = ndimage.minimum_filter(mask, size=5) == ndimage.maximum_filter(mask, size=5)
    glass, tissue = interior & (mask == 0), interior & (mask > 0)
    assert saturation[glass].max() < 0.05
    assert (saturation[tissue] > 0.08).mean() > 0.97  # all stained but for a few gland lumens inside tumour
    lym, stroma = interior & (mask == 3), interior & (mask == 4)
    if lym.any() and stroma.any():  # lymphocytes are darker than stroma
        assert thumbnail[lym].mean() < thumbnail[stroma].mean() - 20


def test_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    options = {"size_wh": (600, 400), "levels": 2, "seed": 5, "pen_marks": True, "dust": True}
    first = write_synthetic_slide(tmp_path / "a" / "s.svs", **options)
    second = write_synthetic_slide(tmp_path / "b" / "s.svs", **options)
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.mask_path.read_bytes() == second.mask_path.read_bytes()


def test_memory_mapped_levels_give_the_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"size_wh": (700, 500), "levels": 3, "seed": 6, "compression": "zlib"}
    in_memory = write_synthetic_slide(tmp_path / "a" / "s.tiff", kind="tiff", **options)
    monkeypatch.setattr(synthetic_slide, "_IN_MEMORY_LEVELS_BYTES", 0)  # what a 20000 x 15000 slide does
    mapped = write_synthetic_slide(tmp_path / "b" / "s.tiff", kind="tiff", **options)
    assert mapped.path.read_bytes() == in_memory.path.read_bytes()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["s.mask.json", "s.mask.png", "s.tiff"]


def test_blank_slide_is_all_glass(blank_slide: Path) -> None:
    assert not (Image.open(blank_slide.with_name("blank.mask.png")).getextrema()[1])
    with open_slide(blank_slide) as slide:
        pixels = slide.read_region((0, 0), 0, (1024, 768)).astype(float)
    assert 230 < pixels.mean() < 250 and pixels.std() < 6


@pytest.mark.parametrize(("kind", "name"), [("svs", "no_mpp.svs"), ("tiff", "no_mpp.tif")])
def test_write_mpp_false_leaves_no_resolution(kind: str, name: str, tmp_path: Path) -> None:
    slide = write_synthetic_slide(tmp_path / name, size_wh=(512, 512), levels=2, kind=kind, write_mpp=False)  # type: ignore[arg-type]
    assert not slide.has_mpp_metadata
    for backend in ("openslide", "tiffslide"):
        with open_slide(slide.path, backend=backend) as opened:
            assert opened.mpp is None and opened.metadata_mpp is None


def test_truncated_copy_keeps_the_first_bytes(tiny_slide: SyntheticSlide, tmp_path: Path) -> None:
    copy = truncated_copy(tiny_slide.path, tmp_path / "cut.svs", keep_fraction=0.25)
    data = tiny_slide.path.read_bytes()
    assert copy.read_bytes() == data[: len(data) // 4]


def test_impossible_pyramid_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="7 levels do not fit a 40x40 slide"):
        write_synthetic_slide(tmp_path / "x.svs", size_wh=(40, 40), levels=7)


def test_full_layout_covers_all_but_a_margin(tmp_path: Path) -> None:
    slide = write_synthetic_slide(tmp_path / "full.svs", size_wh=(1024, 768), levels=2, tissue="full", seed=3)
    mask = slide.read_mask()
    assert (mask > 0).mean() > 0.8
    assert (mask[0] == 0).all() and (mask[:, -1] == 0).all()  # a glass margin all round


# -- what tissue detection is tested on: stains, pigment, fat, ink, bubbles (histo_daen.data.tissue_cases) ---------

SMALL = {"size_wh": (1024, 768), "mpp": 1.0, "levels": 2, "compression": "zlib", "mask_downsample": 8, "seed": 2}


def _thumbnail(slide: SyntheticSlide) -> np.ndarray:
    with open_slide(slide.path) as opened:
        return opened.downsampled(slide.mask_downsample).astype(int)


def test_stain_scale_darkens_or_fades_the_same_tissue(tmp_path: Path) -> None:
    plain = write_synthetic_slide(tmp_path / "plain.svs", **SMALL)
    dark = write_synthetic_slide(tmp_path / "dark.svs", stain_scale=(4.5, 1.0), **SMALL)
    pale = write_synthetic_slide(tmp_path / "pale.svs", stain_scale=(0.35, 0.35), **SMALL)
    np.testing.assert_array_equal(plain.read_mask(), dark.read_mask())  # same layout, only the stain differs
    tissue = plain.read_mask() > 0
    brightness = {
        name: _thumbnail(slide)[tissue].mean() for name, slide in (("plain", plain), ("dark", dark), ("pale", pale))
    }
    assert brightness["dark"] < brightness["plain"] - 40 and brightness["pale"] > brightness["plain"] + 20


def test_pigment_is_black_and_lies_inside_the_tissue(tmp_path: Path) -> None:
    plain = write_synthetic_slide(tmp_path / "plain.svs", **SMALL)
    pigmented = write_synthetic_slide(tmp_path / "pigment.svs", pigment=True, **SMALL)
    assert pigmented.marks_path is None  # pigment hides nothing: it is tissue
    np.testing.assert_array_equal(pigmented.tissue_truth(), plain.read_mask() > 0)
    with open_slide(plain.path) as a, open_slide(pigmented.path) as b:
        before, after = (s.read_region((0, 0), 0, (1024, 768)).astype(int) for s in (a, b))
    darker = (before - after).min(axis=2) > 60  # darkened in every channel
    assert darker.sum() > 500
    tissue = np.kron(plain.read_mask() > 0, np.ones((8, 8), dtype=bool))
    assert tissue[darker].all()


def test_adipose_is_white_tissue_labelled_stroma(tmp_path: Path) -> None:
    slide = write_synthetic_slide(tmp_path / "fat.svs", classes=(ADIPOSE_INDEX,), tissue="disc", **SMALL)
    mask = slide.read_mask()
    assert set(np.unique(mask)) == {0, LUAD.by_code("TAS").map_value}
    inside = ndimage.binary_erosion(mask > 0, iterations=3)
    pixels = _thumbnail(slide)[inside]
    assert pixels.min(axis=1).mean() > 215  # mostly empty cells: nearly as bright as glass
    assert (pixels.max(axis=1) - pixels.min(axis=1)).max() > 10  # with pink membranes


def test_ink_and_bubble_edges_are_recorded_where_they_hide_the_slide(tmp_path: Path) -> None:
    slide = write_synthetic_slide(tmp_path / "ink.svs", ink=("blue", "red"), bubble=True, tissue="sections", **SMALL)
    assert slide.marks_path == tmp_path / "ink.marks.png"
    marks = slide.read_marks()
    assert marks.shape == slide.read_mask().shape and set(np.unique(marks)) == {0, MARK_INK, MARK_BUBBLE}
    tissue = slide.read_mask() > 0
    assert (marks[tissue] == MARK_INK).any() and (marks[~tissue] == MARK_INK).any()  # strokes cross the tissue
    np.testing.assert_array_equal(slide.tissue_truth(), tissue & (marks == 0))
    pixels = _thumbnail(slide)
    ink = marks == MARK_INK
    assert pixels[ink].mean() < pixels[~ink & ~tissue].mean() - 60  # the ink is really drawn there


def test_unknown_ink_colour_and_class_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown ink colour 'purple'"):
        write_synthetic_slide(tmp_path / "x.svs", ink=("purple",), **SMALL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="classes must be"):
        write_synthetic_slide(tmp_path / "x.svs", classes=(7,), **SMALL)


def test_tissue_cases_are_named_slides_with_truth_at_8_um(tmp_path: Path) -> None:
    slide = write_tissue_case("red_ink", tmp_path, size_wh=(1024, 768), seed=1)
    assert slide.path == tmp_path / "red_ink.svs" and slide.mask_downsample == 8
    assert slide.tissue_truth().shape == (96, 128)
    with pytest.raises(ValueError, match="unknown tissue case 'inky'"):
        write_tissue_case("inky", tmp_path)
    with pytest.raises(ValueError, match="whole number of level-0 pixels"):
        write_tissue_case("plain", tmp_path, mpp=0.3)
