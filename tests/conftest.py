"""Shared fixtures. Package-specific fixtures live in tests/<package>/conftest.py beside their tests.

Slides here are real pyramidal files written by :func:`histo_daen.data.synthetic_slide.write_synthetic_slide`
(tifffile), read by real OpenSlide and tiffslide. Session-scoped: treat them as read-only.

Every GeoJSON and OME-Zarr file a test makes the project write goes through :func:`check_qupath_geojson` and
:func:`check_ome_zarr` (also as fixtures of the same names): the GeoJSON schema (geojson-pydantic) with QuPath's import
rules on top (formats.md §1), and the NGFF 0.4 / 0.5 spec (ome-zarr-models, the validator ome-zarr itself reads with).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pytest
import shapely
from geojson_pydantic import Feature, FeatureCollection, MultiPolygon, Polygon
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from shapely.geometry import shape

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


# --- QuPath GeoJSON ---------------------------------------------------------------------------------------------------

Channel = Annotated[StrictInt, Field(ge=0, le=255)]
FiniteNumber = Annotated[StrictInt | StrictFloat, Field(allow_inf_nan=False)]


class QuPathClassification(BaseModel):
    """``{"name", "color"}`` as QuPath 0.4+ writes it; without ``color`` 0.4+ aborts the whole import (§1.3)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    # ':' makes a derived class in QuPath; newlines break its class list.
    name: Annotated[StrictStr, Field(min_length=1, pattern=r"^[^:\r\n]+$")]
    color: Annotated[list[Channel], Field(min_length=3, max_length=3)]  # [r, g, b]


class QuPathProperties(BaseModel):
    """The properties QuPath's importer reads (§1.2); anything else (e.g. ``type``, read as an object type) refused."""

    model_config = ConfigDict(extra="forbid", strict=True)
    objectType: Literal["annotation", "detection", "tile", "cell"]
    name: StrictStr | None = None
    classification: QuPathClassification
    isLocked: StrictBool | None = None
    measurements: dict[StrictStr, FiniteNumber]


QuPathFeature = Feature[Polygon | MultiPolygon, QuPathProperties]


def _positions(geometry: dict[str, Any]) -> Iterator[list[float]]:
    polygons = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    for polygon in polygons:
        for ring in polygon:
            yield from ring


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def check_qupath_geojson(
    source: Path | dict[str, Any], *, region: tuple[float, float, float, float] | None = None
) -> dict[str, Any]:
    """Validate a GeoJSON file (or parsed collection) as the GeoJSON spec and QuPath's importer see it.

    Checks: a FeatureCollection per geojson-pydantic (closed rings of >= 4 positions, coordinates as numbers); each
    feature a Polygon/MultiPolygon with QuPath's properties (:class:`QuPathProperties`) and a UUID ``id``; strict JSON
    (no NaN); coordinates on the 0.01 grid and the geometry valid after QuPath 0.6+ snaps it there; every coordinate
    inside ``region`` (x0, y0, x1, y1) when given.

    Returns:
        The parsed collection.
    """
    if isinstance(source, Path):
        data = source.read_bytes()
        text = (gzip.decompress(data) if source.suffix == ".gz" else data).decode("utf-8")
        collection = json.loads(text, parse_constant=_refuse_constant)
    else:
        collection = source
    FeatureCollection[QuPathFeature].model_validate(collection)
    for feature in collection["features"]:
        uuid.UUID(feature["id"])
        geometry = shape(feature["geometry"])
        assert geometry.is_valid, f"invalid geometry: {shapely.is_valid_reason(geometry)}"
        assert shapely.set_precision(geometry, 0.01).is_valid, "invalid after QuPath's 0.01 snapping"
        for x, y in _positions(feature["geometry"]):
            assert round(x, 2) == x and round(y, 2) == y, f"({x}, {y}) is not on the 0.01 grid"
            if region is not None:
                x0, y0, x1, y1 = region
                assert x0 <= x <= x1 and y0 <= y <= y1, f"({x}, {y}) lies outside the slide {region}"
    return collection


# --- OME-Zarr --------------------------------------------------------------------------------------------------------


def check_ome_zarr(path: Path) -> None:
    """Validate a tissue map against the NGFF spec of its version with ome-zarr-models: the parent image (its arrays
    read, shapes against the axes), the ``labels`` group and every label image it lists."""
    import zarr
    from ome_zarr_models import v04, v05

    root = zarr.open_group(path, mode="r")
    models = v04 if root.metadata.zarr_format == 2 else v05
    image = models.Image.from_zarr(root)
    multiscale = image.attributes.multiscales[0] if models is v04 else image.attributes.ome.multiscales[0]
    labels = models.Labels.from_zarr(zarr.open_group(path / "labels", mode="r"))
    names = labels.attributes.labels if models is v04 else labels.attributes.ome.labels
    assert names, "the labels group lists no label image"
    for name in names:
        label = models.ImageLabel.from_zarr(zarr.open_group(path / "labels" / name, mode="r"))
        label_multiscale = label.attributes.multiscales[0] if models is v04 else label.attributes.ome.multiscales[0]
        # The spec: a label image has the parent's spatial axes and one level per level of the parent.
        assert len(label_multiscale.datasets) == len(multiscale.datasets)
        for level, dataset in enumerate(label_multiscale.datasets):
            parent_shape = root[multiscale.datasets[level].path].shape
            assert root[f"labels/{name}/{dataset.path}"].shape == parent_shape[-2:]


@pytest.fixture(name="check_qupath_geojson")
def _check_qupath_geojson_fixture() -> Callable[..., dict[str, Any]]:
    return check_qupath_geojson


@pytest.fixture(name="check_ome_zarr")
def _check_ome_zarr_fixture() -> Callable[[Path], None]:
    return check_ome_zarr


def _signal_group(process: subprocess.Popen[bytes], signal_number: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has exited
        os.killpg(process.pid, signal_number)


def pause_mid_job(
    start: Callable[[], subprocess.Popen[bytes]],
    started_enough: Callable[[], bool],
    finished: Callable[[], bool],
    attempts: int = 3,
) -> subprocess.Popen[bytes]:
    """Start a job in its own process group (``start``), wait until ``started_enough()``, then stop the whole group
    (SIGSTOP) and return it, stopped, part-way through: the caller sends its signal, then SIGCONT.

    A small job can end between the check and the signal when the machine is busy (a test that sends Ctrl-C then
    sees exit 0). Stopped first, whether it finished (``finished()`` or exited) is known before the signal is sent;
    if it did, its output is the caller's to clear in ``start`` and the job runs again, up to ``attempts`` times.
    """
    for _ in range(attempts):
        process = start()
        try:
            deadline = time.monotonic() + 120
            while not started_enough() and process.poll() is None:
                assert time.monotonic() < deadline, "the job made no progress in 120 s"
                time.sleep(0.01)
            _signal_group(process, signal.SIGSTOP)
        except BaseException:
            _signal_group(process, signal.SIGKILL)
            process.wait()
            raise
        if process.poll() is None and not finished():
            return process
        _signal_group(process, signal.SIGKILL)  # finished first (or all but exited): run it again
        process.wait()
    pytest.fail(f"the job finished before it could be interrupted, {attempts} times")


@pytest.fixture(name="pause_mid_job")
def _pause_mid_job_fixture() -> Callable[..., subprocess.Popen[bytes]]:
    return pause_mid_job
