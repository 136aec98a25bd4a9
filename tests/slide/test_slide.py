"""open_slide: both backends, validation, resolution, RGB reads, identity, and each bad input's message."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from histo_daen.data.synthetic_slide import SyntheticSlide, write_synthetic_slide
from histo_daen.errors import MissingResolutionError, SlideError
from histo_daen.slide import Slide, open_slide

BACKENDS = ["openslide", "tiffslide"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_open_slide_reports_geometry_and_vendor_mpp(tiny_slide: SyntheticSlide, backend: str) -> None:
    with open_slide(tiny_slide.path, backend=backend) as slide:
        assert slide.backend == backend
        assert slide.dimensions == (2048, 1536)
        assert slide.level_dimensions == ((2048, 1536), (1024, 768), (512, 384))
        assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        assert slide.mpp == pytest.approx(0.5)
        assert slide.mpp_source == "metadata"
        assert slide.vendor == "aperio"


@pytest.mark.parametrize("backend", BACKENDS)
def test_generic_tiff_mpp_comes_from_resolution_tags(tiny_tiff_slide: SyntheticSlide, backend: str) -> None:
    with open_slide(tiny_tiff_slide.path, backend=backend) as slide:
        assert slide.mpp == pytest.approx(0.5)
        assert slide.level_count == 3


def test_auto_backend_prefers_openslide(tiny_slide: SyntheticSlide) -> None:
    with open_slide(tiny_slide.path) as slide:
        assert slide.backend == "openslide"


@pytest.mark.parametrize("level", [0, 1, 2])
def test_both_backends_read_identical_pixels(tiny_slide: SyntheticSlide, level: int) -> None:
    downsample = 2**level
    xy_level0 = (300 * downsample // 2, 200 * downsample // 2)
    with open_slide(tiny_slide.path, backend="openslide") as a, open_slide(tiny_slide.path, backend="tiffslide") as b:
        pixels_a = a.read_region(xy_level0, level, (300, 200))
        pixels_b = b.read_region(xy_level0, level, (300, 200))
    assert pixels_a.shape == (200, 300, 3)
    assert pixels_a.dtype == np.uint8
    np.testing.assert_array_equal(pixels_a, pixels_b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pixels_outside_the_slide_are_white(tiny_slide: SyntheticSlide, backend: str) -> None:
    with open_slide(tiny_slide.path, backend=backend) as slide:
        pixels = slide.read_region((2048 - 10, 1536 - 10), 0, (20, 20))
    assert (pixels[10:, :] == 255).all()
    assert (pixels[:, 10:] == 255).all()
    assert (pixels[:10, :10] < 255).any()  # the slide's own glass is grey, not pure white


def test_lossless_slide_reads_match_between_backends_bit_for_bit(tiny_tiff_slide: SyntheticSlide) -> None:
    with open_slide(tiny_tiff_slide.path, backend="openslide") as a, open_slide(tiny_tiff_slide.path, "tiffslide") as b:
        np.testing.assert_array_equal(a.read_region((0, 0), 0, (1024, 768)), b.read_region((0, 0), 0, (1024, 768)))


def test_thumbnail_keeps_the_aspect_ratio(tiny_slide: SyntheticSlide) -> None:
    with open_slide(tiny_slide.path) as slide:
        thumbnail = slide.thumbnail(256)
    assert thumbnail.shape == (192, 256, 3)


def test_downsampled_matches_a_pyramid_level_it_equals(tiny_tiff_slide: SyntheticSlide) -> None:
    with open_slide(tiny_tiff_slide.path) as slide:
        np.testing.assert_array_equal(slide.downsampled(2.0), slide.read_region((0, 0), 1, (512, 384)))


def test_identity_is_stable_and_names_the_file(tiny_slide: SyntheticSlide) -> None:
    with open_slide(tiny_slide.path) as slide:
        first = slide.identity()
    with open_slide(tiny_slide.path, backend="tiffslide") as slide:
        second = slide.identity()
    assert first["name"] == "tiny.svs"
    assert first["dimensions"] == [2048, 1536]
    assert first["header_sha256"] == second["header_sha256"]
    assert len(first["header_sha256"]) == 64


def test_identity_changes_when_the_file_changes(tiny_slide: SyntheticSlide, tmp_path: Path) -> None:
    copy = shutil.copy(tiny_slide.path, tmp_path / "copy.svs")
    with open(copy, "r+b") as handle:  # flip one byte in the last tile: still a valid file size
        handle.seek(-100, 2)
        byte = handle.read(1)
        handle.seek(-100, 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with open_slide(tiny_slide.path, validate=False) as a, open_slide(copy, validate=False) as b:
        assert a.identity()["header_sha256"] != b.identity()["header_sha256"]


def test_unicode_path_opens(tiny_slide: SyntheticSlide, tmp_path: Path) -> None:
    path = Path(shutil.copy(tiny_slide.path, tmp_path / "Schnitt_ü_肺腺癌_é.svs"))
    for backend in BACKENDS:
        with open_slide(path, backend=backend) as slide:
            assert slide.dimensions == (2048, 1536)


def test_source_reopens_the_same_slide(tiny_slide: SyntheticSlide) -> None:
    with open_slide(tiny_slide.path, backend="tiffslide", mpp_override=0.49) as slide:
        source = slide.source()
    with source.open() as reopened:
        assert isinstance(reopened, Slide)
        assert reopened.backend == "tiffslide"
        assert reopened.mpp == pytest.approx(0.49)


# -- resolution ----------------------------------------------------------------------------------------------------


def test_slide_without_mpp_asks_for_slide_mpp(slide_without_mpp: Path) -> None:
    with open_slide(slide_without_mpp) as slide:
        assert slide.mpp is None
        with pytest.raises(
            MissingResolutionError, match=r"no_mpp\.tiff: the file has no microns-per-pixel .*--slide-mpp"
        ):
            slide.require_mpp()


def test_mpp_override_gives_a_slide_its_resolution(slide_without_mpp: Path) -> None:
    with open_slide(slide_without_mpp, mpp_override=0.5) as slide:
        assert slide.require_mpp() == 0.5
        assert slide.mpp_source == "override"


def test_implausible_mpp_counts_as_missing(tmp_path: Path) -> None:
    path = write_synthetic_slide(tmp_path / "dpi.svs", size_wh=(512, 512), levels=1, mpp=352.8, tissue="none").path
    with open_slide(path) as slide:
        assert slide.metadata_mpp == pytest.approx(352.8)
        assert slide.mpp is None
        with pytest.raises(
            MissingResolutionError, match=r"dpi\.svs: the file says 352\.8 um/px, outside .*--slide-mpp"
        ):
            slide.require_mpp()


# -- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_missing_file_is_named(tmp_path: Path, backend: str) -> None:
    with pytest.raises(SlideError, match=r"nothing\.svs: does not exist\. Check the path"):
        open_slide(tmp_path / "nothing.svs", backend=backend)


def test_folder_is_not_a_slide(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match=r": is a folder, not a slide file\. Pass a slide file"):
        open_slide(tmp_path)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.svs"
    path.touch()
    with pytest.raises(SlideError, match=r"empty\.svs: is an empty file"):
        open_slide(path)


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_text_file_is_not_a_slide(not_a_slide: Path, backend: str) -> None:
    with pytest.raises(
        SlideError, match=r"notes\.svs: is not a slide (OpenSlide or tiffslide|OpenSlide|tiffslide) can"
    ):
        open_slide(not_a_slide, backend=backend)


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_truncated_slide_fails_at_open_with_either_backend(truncated_slide: Path, backend: str) -> None:
    with pytest.raises(SlideError, match=r"truncated\.svs: (cannot be decoded|is not a slide).*truncated"):
        open_slide(truncated_slide, backend=backend)


@pytest.mark.realdata
@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_real_unreadable_svs_fails_clearly(openslide_fixtures: Path, backend: str) -> None:
    # OpenSlide opens it and fails decoding; tiffslide opens it and its JPEG decoder fails: one message for both.
    with pytest.raises(SlideError, match=r"unreadable\.svs: cannot be decoded at level 0 .*Bogus marker length"):
        open_slide(openslide_fixtures / "unreadable.svs", backend=backend)


@pytest.mark.realdata
def test_real_unopenable_tiff_names_both_libraries(openslide_fixtures: Path) -> None:
    with pytest.raises(
        SlideError, match=r"unopenable\.tiff: .*OpenSlide: Unsupported TIFF compression: 52479; tiffslide"
    ):
        open_slide(openslide_fixtures / "unopenable.tiff")


@pytest.mark.realdata
def test_real_unopenable_tiff_with_openslide_only(openslide_fixtures: Path) -> None:
    with pytest.raises(SlideError, match=r"unopenable\.tiff: is not a slide OpenSlide can open .*--backend auto"):
        open_slide(openslide_fixtures / "unopenable.tiff", backend="openslide")


@pytest.mark.realdata
def test_real_boxes_tiff_has_an_implausible_72_dpi_resolution(openslide_fixtures: Path) -> None:
    with open_slide(openslide_fixtures / "boxes.tiff") as slide:
        assert slide.level_count == 4
        with pytest.raises(MissingResolutionError, match=r"boxes\.tiff: the file says 352\.8 um/px"):
            slide.require_mpp()


@pytest.mark.realdata
@pytest.mark.parametrize("backend", BACKENDS)
def test_real_small_svs_opens_with_its_mpp(openslide_fixtures: Path, backend: str) -> None:
    with open_slide(openslide_fixtures / "small.svs", backend=backend) as slide:
        assert slide.dimensions == (16, 16)
        assert slide.mpp == pytest.approx(0.499)
