"""Fixtures for slide inference: a lossless pyramidal TIFF with known pixels, written with tifffile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile


def write_pyramidal_tiff(path: Path, image: np.ndarray, *, mpp: float, levels: int = 3) -> Path:
    """A generic tiled TIFF (formats.md §4.2): Deflate (lossless, so reads give back ``image``), 2x2-mean levels."""
    with tifffile.TiffWriter(path) as tif:
        level_image = image
        for level in range(levels):
            level_mpp = mpp * 2**level
            tif.write(
                level_image,
                tile=(256, 256),
                photometric="rgb",
                compression="zlib",
                resolution=(1e4 / level_mpp, 1e4 / level_mpp),
                resolutionunit="CENTIMETER",
                subfiletype=1 if level else 0,
                metadata=None,
            )
            height, width = level_image.shape[0] // 2 * 2, level_image.shape[1] // 2 * 2
            level_image = (
                level_image[:height, :width].astype(np.float32).reshape(height // 2, 2, width // 2, 2, 3).mean((1, 3))
            )
            level_image = np.rint(level_image).astype(np.uint8)
    return path


def stained_pattern(shape_hw: tuple[int, int], *, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8: a smooth, saturated pink/purple pattern everywhere (all tissue, no glass), varying per pixel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape_hw[0], : shape_hw[1]].astype(np.float32)
    red = 170 + 40 * np.sin(xx / 37.0) + rng.integers(-8, 9, shape_hw)
    green = 70 + 30 * np.cos(yy / 23.0) + rng.integers(-8, 9, shape_hw)
    blue = 150 + 35 * np.sin((xx + yy) / 51.0) + rng.integers(-8, 9, shape_hw)
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def pattern_slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """(path, level-0 pixels) of a 768 x 512 px generic TIFF at 0.5 um/px, all of it stained, 3 levels."""
    image = stained_pattern((512, 768))
    path = write_pyramidal_tiff(tmp_path_factory.mktemp("slides") / "pattern.tiff", image, mpp=0.5)
    return path, image


@pytest.fixture(scope="session")
def half_glass_slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 768 x 512 px TIFF at 0.5 um/px: stained pattern on level-0 columns 0-383, white glass (245) right of it."""
    image = stained_pattern((512, 768), seed=1)
    image[:, 384:] = 245
    return write_pyramidal_tiff(tmp_path_factory.mktemp("slides") / "half_glass.tiff", image, mpp=0.5)


@pytest.fixture(scope="session")
def field_slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """(path, level-0 pixels) of a 1536 x 1024 px TIFF at 0.5 um/px whose colour channels are smooth class fields.

    Three smooth fields (red, decoded green, blue) rise and fall over 150-450 px, so which one is strongest (the
    "class") changes along curved borders that cross tile borders at every angle; all of it is stained tissue.
    """
    yy, xx = np.mgrid[:1024, :1536].astype(np.float32)
    red = 150 + 60 * np.sin(xx / 53.0 + 0.4 * np.sin(yy / 71.0))
    green = 150 + 60 * np.sin(yy / 47.0 + 0.5 * np.cos(xx / 89.0) + 1.0)
    blue = 150 + 60 * np.sin((xx + yy) / 67.0 + 2.0)
    # Green is stored halved (decode: 2 * (g - 20)) so every pixel is saturated enough to count as tissue.
    image = np.rint(np.stack([red, green / 2 + 20, blue], axis=-1)).astype(np.uint8)
    path = write_pyramidal_tiff(tmp_path_factory.mktemp("slides") / "fields.tiff", image, mpp=0.5)
    return path, image
