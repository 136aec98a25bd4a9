"""Fixtures for tiling: slides with pen marks and dust (and their clean twin), the tissue-detection cases, a small
cohort folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from histo_daen.data.synthetic_slide import SyntheticSlide, write_synthetic_slide
from histo_daen.data.tissue_cases import TISSUE_CASES, write_tissue_case


@pytest.fixture(scope="session")
def marked_slide_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticSlide, SyntheticSlide]:
    """(clean, marked): the same 2048 x 1536 slide at 0.5 um/px, the second with pen marks and dust added."""
    folder = tmp_path_factory.mktemp("marked")
    common = {"size_wh": (2048, 1536), "mpp": 0.5, "levels": 3, "compression": "zlib", "seed": 11}
    clean = write_synthetic_slide(folder / "clean.svs", **common)
    marked = write_synthetic_slide(folder / "marked.svs", pen_marks=True, dust=True, **common)
    return clean, marked


@pytest.fixture(scope="session", params=list(TISSUE_CASES))
def tissue_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SyntheticSlide:
    """Each tissue-detection case (``histo_daen.data.tissue_cases``), seed 0: 4 x 3 mm at 1 um/px, truth at 8 um/px.

    The same slides as the first seed of ``benchmarks/bench_tissue.py``.
    """
    return write_tissue_case(request.param, tmp_path_factory.mktemp(f"case_{request.param}"), seed=0)


@pytest.fixture(scope="session")
def small_slide(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSlide:
    """1024 x 768 px at 0.5 um/px, a tissue disc: a quick slide for tiling jobs (64-px tiles at 1 um/px)."""
    folder = tmp_path_factory.mktemp("small")
    return write_synthetic_slide(folder / "small.svs", size_wh=(1024, 768), mpp=0.5, tissue="disc", seed=21)


def copy_slide(slide: SyntheticSlide, folder: Path, name: str | None = None) -> Path:
    """A copy of a slide file in ``folder`` (tests that write outputs beside their inputs)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or slide.path.name)
    target.write_bytes(slide.path.read_bytes())
    return target
