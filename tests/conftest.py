"""Shared fixtures. Package-specific fixtures live in tests/<package>/conftest.py beside their tests.

Slides here are real pyramidal files written by :func:`histo_daen.data.synthetic_slide.write_synthetic_slide`
(tifffile), read by real OpenSlide and tiffslide. Session-scoped: treat them as read-only.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from histo_daen.data.synthetic_slide import SyntheticSlide, truncated_copy, write_synthetic_slide

REPO_ROOT = Path(__file__).resolve().parents[1]
OPENSLIDE_FIXTURES = REPO_ROOT.parent / "shared" / "data" / "openslide-fixtures"


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same global RNG state (tests must not depend on order)."""
    random.seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def tiny_slide(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSlide:
    """Aperio-style JPEG SVS, 2048 x 1536 px at 0.5 um/px, 3 levels: 2-3 tissue sections of the 4 classes on glass.

    ``.path`` is the slide, ``.read_mask()`` its ground truth (map values, ``.mask_downsample`` = 16).
    """
    folder = tmp_path_factory.mktemp("tiny_slide")
    return write_synthetic_slide(folder / "tiny.svs", size_wh=(2048, 1536), mpp=0.5, levels=3, seed=7)


@pytest.fixture(scope="session")
def tiny_tiff_slide(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSlide:
    """Generic pyramidal TIFF, lossless Deflate, 1024 x 768 px at 0.5 um/px, 3 levels, resolution tags, a disc."""
    folder = tmp_path_factory.mktemp("tiny_tiff_slide")
    return write_synthetic_slide(
        folder / "tiny.tiff",
        size_wh=(1024, 768),
        mpp=0.5,
        levels=3,
        kind="tiff",
        compression="zlib",
        tissue="disc",
        seed=3,
    )


@pytest.fixture(scope="session")
def slide_without_mpp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generic TIFF, 1024 x 768 px (truly 0.5 um/px), with no resolution metadata at all."""
    folder = tmp_path_factory.mktemp("slide_without_mpp")
    return write_synthetic_slide(folder / "no_mpp.tiff", size_wh=(1024, 768), kind="tiff", write_mpp=False, seed=4).path


@pytest.fixture(scope="session")
def blank_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """JPEG SVS, 1024 x 768 px at 0.5 um/px: white glass with faint noise, no tissue."""
    folder = tmp_path_factory.mktemp("blank_slide")
    return write_synthetic_slide(folder / "blank.svs", size_wh=(1024, 768), tissue="none", seed=5).path


@pytest.fixture(scope="session")
def truncated_slide(tiny_slide: SyntheticSlide, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first half of ``tiny_slide``'s bytes, as a failed copy leaves it."""
    return truncated_copy(tiny_slide.path, tmp_path_factory.mktemp("truncated") / "truncated.svs", keep_fraction=0.5)


@pytest.fixture(scope="session")
def not_a_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text file named like a slide."""
    path = tmp_path_factory.mktemp("not_a_slide") / "notes.svs"
    path.write_text("patient notes, not an image\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def openslide_fixtures() -> Path:
    """openslide-python's real test files (small.svs, boxes.tiff, unopenable.tiff, unreadable.svs).

    Tests using it are marked ``realdata``; they skip when the shared data folder is absent.
    """
    if not OPENSLIDE_FIXTURES.is_dir():
        pytest.skip(f"shared data folder absent: {OPENSLIDE_FIXTURES.relative_to(REPO_ROOT.parent)}")
    return OPENSLIDE_FIXTURES


@pytest.fixture(scope="session")
def segment_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained DAEN checkpoint for slide segmentation: ResNet-18 at width 0.25, 64-px tiles at 2 um/px.

    Its CAMs are arbitrary but fixed (seeded weights), which is all the segment tests need: shapes, files, resume.
    """
    import torch

    from histo_daen.config.schema import ModelConfig
    from histo_daen.models import build_model, checkpoint_state, save_checkpoint

    torch.manual_seed(0)
    model = build_model(ModelConfig(variant="daen", backbone="resnet18", width=0.25, input_size=64, input_mpp=2.0))
    path = tmp_path_factory.mktemp("segment_checkpoint") / "last.pt"
    return save_checkpoint(path, checkpoint_state(model))
