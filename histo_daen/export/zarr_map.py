"""The OME-Zarr tissue map of one slide: class scores as the parent image, the class label map under ``labels/``.

Layout (NGFF 0.4 on Zarr v2 by default, NGFF 0.5 on Zarr v3 on request; ``formats.md`` §2)::

    map.zarr/                      parent image "class_probabilities": (c, y, x) float16 in [0, 1]
    ├── s0, s1, ... sN             resolution levels, factor 2 (mean)
    └── labels/                    {"labels": ["tissue_classes"]}
        └── tissue_classes/        (y, x) uint8: 0 = no tissue, 1..K = the class set's map values
            └── s0, s1, ... sN     same levels as the parent (mode of each 2x2 block)

Level ``s0`` has one pixel per ``map_downsample`` level-0 slide pixels. Every level's ``scale`` is its pixel size in
micrometres and its ``translation`` puts pixel centres where they lie on the slide, so a viewer can lay the map over
level 0; the ``histo_daen`` attribute repeats ``mpp0`` and ``map_downsample`` for readers that want level-0 pixels
directly (level-0 x of map column ``j`` = ``j * map_downsample``).

The map is written band by band (a band is one row of chunks), so neither the slide nor the map is ever held in
memory. ``histo_daen.bands_done`` counts the finished bands: a killed job resumes at the first unfinished band. The
OME metadata and ``histo_daen.complete = true`` are written last; a map without them is an interrupted run.

Damage is detected, never read as "no tissue": since map format 2 every chunk is stored (also those of glass, which
zarr would otherwise leave out as equal to the fill value) with a Zstandard checksum, so :func:`read_tissue_map`
refuses a map with a missing chunk and reading a corrupt chunk raises a :class:`~histo_daen.errors.PathError`
naming the map (:func:`reading_map`). Format-1 maps, which left out glass chunks, are read without the first check.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numcodecs  # type: ignore[import-untyped]
import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from histo_daen import __version__
from histo_daen.classes import NO_TISSUE_MAP_VALUE, ClassSet, class_set_for
from histo_daen.errors import OutputExistsError, PathError
from histo_daen.provenance import require_same

__all__ = [
    "LABEL_NAME",
    "SCORES_NAME",
    "ClassArea",
    "NgffVersion",
    "TissueMap",
    "TissueMapWriter",
    "auto_pyramid_levels",
    "class_areas",
    "downsample_labels",
    "downsample_scores",
    "open_map_writer",
    "read_tissue_map",
    "reading_map",
]

logger = logging.getLogger(__name__)

NgffVersion = Literal["0.4", "0.5"]

LABEL_NAME = "tissue_classes"
SCORES_NAME = "class_probabilities"
MAP_FORMAT_VERSION = 2  # 2: every chunk stored, Zstandard checksums (damage is detectable); 1: glass chunks omitted
# Auto pyramids halve until the smallest level fits in about this many pixels a side (formats.md §2.7).
PYRAMID_MAX_SIDE = 1024
_ZSTD_LEVEL = 3


# What opening a folder that is not one of our maps raises (missing group, missing or foreign attributes).
_NOT_OUR_MAP_ERRORS = (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError)


def _our_attributes(group: zarr.Group) -> dict[str, Any]:
    """The ``histo_daen`` attribute of a map's root group (raises KeyError when absent)."""
    return dict(cast("Mapping[str, Any]", group.attrs["histo_daen"]))


def _array(group: zarr.Group, name: str) -> zarr.Array:
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise KeyError(f"{name} in {group.store_path} is not an array")
    # Glass chunks equal the fill value; zarr would leave them out, and a missing chunk could not be told from one.
    return node.with_config({"write_empty_chunks": True})


# What decoding a damaged chunk raises: Zstandard's checksum or frame errors (RuntimeError from numcodecs), a chunk of
# the wrong size (ValueError), a file that vanished or cannot be read (OSError).
_DAMAGED_CHUNK_ERRORS = (RuntimeError, ValueError, OSError, zarr.errors.BaseZarrError)


@contextlib.contextmanager
def reading_map(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn what a damaged chunk raises while reading the map at ``path`` into one :class:`PathError`."""
    try:
        yield
    except _DAMAGED_CHUNK_ERRORS as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PathError(
            path,
            f"is damaged: a chunk cannot be decoded ({reason})",
            "Segment the slide again (histo-daen segment --overwrite), or restore the map from a copy.",
        ) from err


def _group(group: zarr.Group, name: str) -> zarr.Group:
    node = group[name]
    if not isinstance(node, zarr.Group):
        raise KeyError(f"{name} in {group.store_path} is not a group")
    return node


def auto_pyramid_levels(shape_hw: tuple[int, int], *, max_side: int = PYRAMID_MAX_SIDE) -> int:
    """Number of levels (s0 included) when halving until the longest side is at most ``max_side`` pixels."""
    levels, side = 1, max(shape_hw)
    while side > max_side:
        side = math.ceil(side / 2)
        levels += 1
    return levels


def _level_shape(shape_hw: tuple[int, int], level: int) -> tuple[int, int]:
    height, width = shape_hw
    for _ in range(level):
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    return height, width


def _pad_to_even(block: np.ndarray) -> np.ndarray:
    """Repeat the last row/column of the trailing two axes so both are even (edge pixels average with themselves)."""
    pad_y, pad_x = block.shape[-2] % 2, block.shape[-1] % 2
    if not pad_y and not pad_x:
        return block
    widths = [(0, 0)] * (block.ndim - 2) + [(0, pad_y), (0, pad_x)]
    return np.pad(block, widths, mode="edge")


def downsample_scores(scores: np.ndarray) -> np.ndarray:
    """Halve a score block by the mean of each 2x2 pixel block.

    Args:
        scores: (C, h, w) float, any h and w (odd edges average with themselves).

    Returns:
        (C, ceil(h/2), ceil(w/2)) float32.
    """
    even = _pad_to_even(scores.astype(np.float32, copy=False))
    channels, height, width = even.shape
    return even.reshape(channels, height // 2, 2, width // 2, 2).mean(axis=(2, 4))


def downsample_labels(labels: np.ndarray, n_values: int) -> np.ndarray:
    """Halve a label block by the most frequent value of each 2x2 block; ties go to tissue, then the lower value.

    Args:
        labels: (h, w) uint8 map values in [0, n_values).
        n_values: number of distinct map values (classes + 1 for "no tissue").

    Returns:
        (ceil(h/2), ceil(w/2)) uint8.
    """
    even = _pad_to_even(labels)
    height, width = even.shape
    quads = even.reshape(height // 2, 2, width // 2, 2)
    # Twice the count, plus one for tissue values: a 2-2 split between glass and a class keeps the class visible.
    votes = np.stack([2 * (quads == value).sum(axis=(1, 3)) + (value > 0) for value in range(n_values)])
    return votes.argmax(axis=0).astype(np.uint8)


def _axes(with_channel: bool) -> list[dict[str, str]]:
    space = [{"name": name, "type": "space", "unit": "micrometer"} for name in ("y", "x")]
    return ([{"name": "c", "type": "channel"}] if with_channel else []) + space


def _datasets(n_levels: int, *, mpp0: float, map_downsample: float, with_channel: bool) -> list[dict[str, Any]]:
    datasets = []
    for level in range(n_levels):
        downsample = map_downsample * 2**level  # level-0 pixels per pixel of this level
        size_um = mpp0 * downsample
        # Pixel centres: pixel 0 of this level covers level-0 pixels [0, downsample), centred at (downsample - 1) / 2.
        offset_um = (downsample - 1) / 2 * mpp0
        scale = ([1.0] if with_channel else []) + [size_um, size_um]
        translation = ([0.0] if with_channel else []) + [offset_um, offset_um]
        datasets.append(
            {
                "path": f"s{level}",
                "coordinateTransformations": [
                    {"type": "scale", "scale": scale},
                    {"type": "translation", "translation": translation},
                ],
            }
        )
    return datasets


def _multiscales(
    name: str, n_levels: int, *, mpp0: float, map_downsample: float, with_channel: bool, ngff_version: NgffVersion
) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {
        "name": name,
        "axes": _axes(with_channel),
        "datasets": _datasets(n_levels, mpp0=mpp0, map_downsample=map_downsample, with_channel=with_channel),
        "type": "mean" if with_channel else "mode",
        "metadata": {
            "method": "histo_daen.export.zarr_map." + ("downsample_scores" if with_channel else "downsample_labels"),
            "version": __version__,
        },
    }
    if ngff_version == "0.4":
        entry = {"version": "0.4", **entry}
    return [entry]


def _image_label(classes: ClassSet, ngff_version: NgffVersion) -> dict[str, Any]:
    colors: list[dict[str, Any]] = [{"label-value": NO_TISSUE_MAP_VALUE, "rgba": [0, 0, 0, 0]}]
    properties: list[dict[str, Any]] = [{"label-value": NO_TISSUE_MAP_VALUE, "class": "none", "name": "no tissue"}]
    for cls in classes.classes:
        colors.append({"label-value": cls.map_value, "rgba": [*cls.colour, 255]})
        properties.append({"label-value": cls.map_value, "class": cls.code, "name": cls.name})
    return {"version": ngff_version, "colors": colors, "properties": properties, "source": {"image": "../../"}}


def _set_ome_attributes(group: zarr.Group, ome: dict[str, Any], ngff_version: NgffVersion) -> None:
    """NGFF 0.4 keeps OME keys at the top of the attributes; 0.5 nests them under ``ome`` with the version."""
    if ngff_version == "0.4":
        group.attrs.update(ome)
    else:
        group.attrs.update({"ome": {"version": "0.5", **ome}})


class TissueMapWriter:
    """Writes one tissue map band by band; create or resume it with :func:`open_map_writer`.

    A band is one row of chunks: map rows ``[index * band_height, min((index + 1) * band_height, height))``. Bands
    are written in order; :meth:`write_band` records each finished band in the map, so a killed job loses at most
    the band it was writing.
    """

    def __init__(self, path: Path, group: zarr.Group) -> None:
        self.path = path
        self._group = group
        attrs = _our_attributes(group)
        self._attrs = attrs
        self.shape_hw: tuple[int, int] = (int(attrs["shape_hw"][0]), int(attrs["shape_hw"][1]))
        self.band_height: int = int(attrs["chunk_size"])
        self.classes = _stored_classes(attrs)
        self.ngff_version: NgffVersion = attrs["ngff_version"]
        self._scores = _array(group, "s0")
        self._labels = _array(group, f"labels/{LABEL_NAME}/s0")

    @property
    def n_bands(self) -> int:
        return math.ceil(self.shape_hw[0] / self.band_height)

    @property
    def bands_done(self) -> int:
        """Bands 0 .. bands_done - 1 are written; the next write must be band ``bands_done``."""
        return int(self._attrs["bands_done"])

    @property
    def is_complete(self) -> bool:
        return bool(self._attrs.get("complete", False))

    def band_rows(self, index: int) -> tuple[int, int]:
        """Map rows ``(y0, y1)`` of band ``index`` (end exclusive)."""
        y0 = index * self.band_height
        return y0, min(y0 + self.band_height, self.shape_hw[0])

    def write_band(self, index: int, scores: np.ndarray, labels: np.ndarray) -> None:
        """Write band ``index`` and record it as done.

        Args:
            index: the band, which must be the next unfinished one (bands are written in order).
            scores: (K, y1 - y0, W) float in [0, 1], class scores of the band's rows (stored as float16).
            labels: (y1 - y0, W) uint8 map values (0 = no tissue, 1..K = classes).
        """
        if index != self.bands_done:
            raise ValueError(f"band {index} written out of order: {self.bands_done} bands are done")
        y0, y1 = self.band_rows(index)
        n_classes, width = len(self.classes), self.shape_hw[1]
        if scores.shape != (n_classes, y1 - y0, width) or labels.shape != (y1 - y0, width):
            raise ValueError(
                f"band {index} expects scores {(n_classes, y1 - y0, width)} and labels {(y1 - y0, width)}, "
                f"got {scores.shape} and {labels.shape}"
            )
        self._scores[:, y0:y1, :] = scores.astype(np.float16)
        self._labels[y0:y1, :] = labels.astype(np.uint8, copy=False)
        # The progress mark goes in after the data: zarr replaces .zattrs atomically, so it never runs ahead of it.
        self._update_attrs(bands_done=index + 1)

    def _update_attrs(self, **changes: Any) -> None:
        self._attrs.update(changes)
        self._group.attrs.update({"histo_daen": self._attrs})

    def finalise(self, *, pyramid_levels: int | None = None) -> None:
        """Build the lower resolution levels, write the OME metadata, then mark the map complete.

        Args:
            pyramid_levels: levels including s0; None halves until the longest side is at most 1024 pixels.
        """
        if self.bands_done != self.n_bands:
            raise ValueError(f"cannot finalise {self.path}: {self.bands_done} of {self.n_bands} bands are written")
        n_levels = pyramid_levels if pyramid_levels is not None else auto_pyramid_levels(self.shape_hw)
        if n_levels < 1:
            raise ValueError(f"pyramid_levels must be at least 1, got {n_levels}")
        label_group = _group(self._group, f"labels/{LABEL_NAME}")
        for level in range(1, n_levels):
            self._write_level(level, label_group)
        mpp0, map_downsample = float(self._attrs["mpp0"]), float(self._attrs["map_downsample"])
        version = self.ngff_version
        _set_ome_attributes(
            self._group,
            {
                "multiscales": _multiscales(
                    SCORES_NAME,
                    n_levels,
                    mpp0=mpp0,
                    map_downsample=map_downsample,
                    with_channel=True,
                    ngff_version=version,
                )
            },
            version,
        )
        _set_ome_attributes(_group(self._group, "labels"), {"labels": [LABEL_NAME]}, version)
        _set_ome_attributes(
            label_group,
            {
                "multiscales": _multiscales(
                    LABEL_NAME,
                    n_levels,
                    mpp0=mpp0,
                    map_downsample=map_downsample,
                    with_channel=False,
                    ngff_version=version,
                ),
                "image-label": _image_label(self.classes, version),
            },
            version,
        )
        self._update_attrs(n_levels=n_levels, complete=True)

    def _write_level(self, level: int, label_group: zarr.Group) -> None:
        previous_shape = _level_shape(self.shape_hw, level - 1)
        shape_hw = _level_shape(self.shape_hw, level)
        source_scores, source_labels = _array(self._group, f"s{level - 1}"), _array(label_group, f"s{level - 1}")
        scores = _create_scores_array(self._group, f"s{level}", len(self.classes), shape_hw, self.band_height)
        labels = _create_labels_array(label_group, f"s{level}", shape_hw, self.band_height)
        n_values = len(self.classes) + 1
        for y0 in range(0, shape_hw[0], self.band_height):
            y1 = min(y0 + self.band_height, shape_hw[0])
            rows = slice(2 * y0, min(2 * y1, previous_shape[0]))
            scores[:, y0:y1, :] = downsample_scores(np.asarray(source_scores[:, rows, :])).astype(np.float16)
            labels[y0:y1, :] = downsample_labels(np.asarray(source_labels[rows, :]), n_values)


def _chunk_key_encoding(zarr_format: int) -> dict[str, Any]:
    # NGFF 0.4 wants nested chunk folders ("/"); 0.5 uses v3's default encoding with "/".
    return {"name": "v2" if zarr_format == 2 else "default", "separator": "/"}


def _compressors(zarr_format: int) -> Any:
    # The checksum makes a flipped bit a decoding error instead of wrong labels (4 bytes per chunk).
    if zarr_format == 2:
        return numcodecs.Zstd(level=_ZSTD_LEVEL, checksum=True)
    return ZstdCodec(level=_ZSTD_LEVEL, checksum=True)


def _stored_classes(attrs: dict[str, Any]) -> ClassSet:
    """The class set a map was written with (custom sets, e.g. from imported checkpoints, included)."""
    return class_set_for(
        attrs["class_set"], attrs["classes"], names=attrs.get("class_names"), colours=attrs.get("class_colours")
    )


def _create_scores_array(
    group: zarr.Group, name: str, n_classes: int, shape_hw: tuple[int, int], chunk_size: int
) -> zarr.Array:
    zarr_format = group.metadata.zarr_format
    return group.create_array(
        name,
        shape=(n_classes, *shape_hw),
        chunks=(1, chunk_size, chunk_size),  # one class reads alone (formats.md §2.7)
        dtype="float16",
        fill_value=0,
        compressors=_compressors(zarr_format),
        chunk_key_encoding=_chunk_key_encoding(zarr_format),
        dimension_names=["c", "y", "x"] if zarr_format == 3 else None,
        overwrite=True,
        config={"write_empty_chunks": True},
    )


def _create_labels_array(group: zarr.Group, name: str, shape_hw: tuple[int, int], chunk_size: int) -> zarr.Array:
    zarr_format = group.metadata.zarr_format
    return group.create_array(
        name,
        shape=shape_hw,
        chunks=(chunk_size, chunk_size),
        dtype="uint8",
        fill_value=NO_TISSUE_MAP_VALUE,
        compressors=_compressors(zarr_format),
        chunk_key_encoding=_chunk_key_encoding(zarr_format),
        dimension_names=["y", "x"] if zarr_format == 3 else None,
        overwrite=True,
        config={"write_empty_chunks": True},
    )


def open_map_writer(
    path: str | os.PathLike[str],
    *,
    shape_hw: tuple[int, int],
    classes: ClassSet,
    mpp0: float,
    map_downsample: float,
    chunk_size: int = 1024,
    ngff_version: NgffVersion = "0.4",
    provenance: Mapping[str, Any] | None = None,
) -> TissueMapWriter:
    """Create a tissue map at ``path``, or reopen an interrupted one made with the same parameters.

    Args:
        path: the ``.zarr`` folder (callers build it under a ``.partial`` name and rename it when complete).
        shape_hw: (height, width) of level s0 in map pixels.
        classes: the class set; map value ``cls.map_value`` is ``cls.index + 1``.
        mpp0: microns per pixel of the slide's level 0.
        map_downsample: level-0 pixels per map pixel (map mpp = ``mpp0 * map_downsample``).
        chunk_size: chunk side in map pixels; also the band height.
        ngff_version: "0.4" (Zarr v2, widest reader support, QuPath included) or "0.5" (Zarr v3).
        provenance: JSON-able facts that determine the map (model, config, slide identity); a resume with other
            facts is refused, naming what differs.

    Raises:
        OutputExistsError: ``path`` holds a map made with other parameters, or something that is not a map.
    """
    target = Path(path)
    attrs: dict[str, Any] = {
        "format_version": MAP_FORMAT_VERSION,
        "histo_daen_version": __version__,
        "ngff_version": ngff_version,
        "class_set": classes.name,
        "classes": list(classes.codes),
        "class_names": [cls.name for cls in classes.classes],
        "class_colours": [list(cls.colour) for cls in classes.classes],
        "shape_hw": [int(shape_hw[0]), int(shape_hw[1])],
        "mpp0": float(mpp0),
        "map_downsample": float(map_downsample),
        "map_mpp": float(mpp0 * map_downsample),
        "chunk_size": int(chunk_size),
        "provenance": dict(provenance or {}),
    }
    if target.exists():
        writer = _reopen_writer(target, attrs)
        if writer is not None:
            logger.info("resuming %s: %d of %d bands already written", target, writer.bands_done, writer.n_bands)
            return writer
    group = zarr.open_group(target, mode="w", zarr_format=2 if ngff_version == "0.4" else 3)
    group.attrs.update({"histo_daen": {**attrs, "bands_done": 0, "complete": False}})
    _create_scores_array(group, "s0", len(classes), shape_hw, chunk_size)
    label_group = group.require_group("labels").require_group(LABEL_NAME)
    _create_labels_array(label_group, "s0", shape_hw, chunk_size)
    return TissueMapWriter(target, group)


def _reopen_writer(target: Path, requested: dict[str, Any]) -> TissueMapWriter | None:
    """The writer of an interrupted map with equal parameters; None for an empty folder; raises otherwise."""
    if target.is_dir() and not any(target.iterdir()):
        return None
    try:
        group = zarr.open_group(target, mode="r+")
        stored = _our_attributes(group)
    except _NOT_OUR_MAP_ERRORS as err:
        raise OutputExistsError(
            target, "exists and is not a histo-daen tissue map", "Move it away, or pass --overwrite to replace it."
        ) from err
    require_same(
        {key: stored.get(key) for key in requested},
        requested,
        path=target,
        subject="holds an unfinished map made with other settings",
        hint="Pass --overwrite to start it again, or rerun with the settings it was made with.",
    )
    return TissueMapWriter(target, group)


@dataclass(frozen=True)
class TissueMap:
    """A finished tissue map, opened for reading (arrays are read lazily from disk).

    Attributes:
        path: the ``.zarr`` folder.
        classes: the class set of the map values.
        shape_hw: (height, width) of level s0 in map pixels.
        mpp0: microns per pixel of the slide's level 0.
        map_downsample: level-0 pixels per s0 pixel.
        n_levels: resolution levels s0 .. s{n_levels - 1}.
        ngff_version: "0.4" or "0.5".
        provenance: what produced the map (model, config, slide identity, version).
    """

    path: Path
    classes: ClassSet
    shape_hw: tuple[int, int]
    mpp0: float
    map_downsample: float
    n_levels: int
    ngff_version: NgffVersion
    provenance: dict[str, Any]
    chunk_size: int

    @property
    def map_mpp(self) -> float:
        """Microns per pixel of level s0."""
        return self.mpp0 * self.map_downsample

    def labels(self, level: int = 0) -> zarr.Array:
        """(h, w) uint8 map values of a level: 0 = no tissue, 1..K = classes (``TissueClass.map_value``)."""
        return zarr.open_array(self.path / "labels" / LABEL_NAME / f"s{level}", mode="r")

    def scores(self, level: int = 0) -> zarr.Array:
        """(K, h, w) float16 class scores in [0, 1] of a level, channel k = class index k."""
        return zarr.open_array(self.path / f"s{level}", mode="r")

    def label_bands(self) -> Iterator[tuple[int, np.ndarray]]:
        """Level s0 in bands of chunk rows: yields ``(y0, (h, W) uint8 labels)``; memory stays one band.

        Raises:
            PathError: a chunk is damaged.
        """
        labels = self.labels(0)
        for y0 in range(0, self.shape_hw[0], self.chunk_size):
            with reading_map(self.path):
                band = np.asarray(labels[y0 : y0 + self.chunk_size, :])
            yield y0, band


def read_tissue_map(path: str | os.PathLike[str]) -> TissueMap:
    """Open a finished tissue map written by :class:`TissueMapWriter`.

    Raises:
        PathError: ``path`` is missing, not a histo-daen map, or an interrupted one.
    """
    source = Path(path)
    if not source.exists():
        raise PathError(source, "does not exist", "Give the map.zarr folder that `histo-daen segment` wrote.")
    try:
        group = zarr.open_group(source, mode="r")
        attrs = _our_attributes(group)
    except _NOT_OUR_MAP_ERRORS as err:
        raise PathError(
            source, "is not a histo-daen tissue map", "Give the map.zarr folder that `histo-daen segment` wrote."
        ) from err
    if not attrs.get("complete", False):
        raise PathError(
            source,
            f"is an unfinished map ({attrs.get('bands_done', 0)} bands written)",
            "Rerun `histo-daen segment` with the same options to finish it.",
        )
    if int(attrs.get("format_version", 1)) >= 2:
        _check_all_chunks(source, group, int(attrs["n_levels"]))
    return TissueMap(
        path=source,
        classes=_stored_classes(attrs),
        shape_hw=(int(attrs["shape_hw"][0]), int(attrs["shape_hw"][1])),
        mpp0=float(attrs["mpp0"]),
        map_downsample=float(attrs["map_downsample"]),
        n_levels=int(attrs["n_levels"]),
        ngff_version=attrs["ngff_version"],
        provenance=dict(attrs.get("provenance", {})),
        chunk_size=int(attrs["chunk_size"]),
    )


def _check_all_chunks(source: Path, group: zarr.Group, n_levels: int) -> None:
    """Every chunk of every level is stored (format 2 writes them all); a missing one is damage, not glass."""
    for name in [f"s{level}" for level in range(n_levels)] + [
        f"labels/{LABEL_NAME}/s{level}" for level in range(n_levels)
    ]:
        try:
            array = _array(group, name)
            stored, expected = array.nchunks_initialized, array.nchunks
        except (*_NOT_OUR_MAP_ERRORS, *_DAMAGED_CHUNK_ERRORS) as err:
            raise PathError(
                source, f"is damaged: {name} cannot be opened ({err})", "Segment the slide again with --overwrite."
            ) from err
        if stored != expected:
            raise PathError(
                source,
                f"is damaged: {expected - stored} of {expected} chunks of {name} are missing",
                "Segment the slide again (histo-daen segment --overwrite), or restore the map from a copy.",
            )


@dataclass(frozen=True)
class ClassArea:
    """How much of a slide's tissue one class covers.

    Attributes:
        code: class code (e.g. "TE").
        name: long name.
        colour: (r, g, b) 0-255.
        n_pixels: map pixels (level s0) labelled with the class.
        area_mm2: their area in square millimetres.
        percent_of_tissue: share of all tissue pixels, in [0, 100] (0 when there is no tissue).
    """

    code: str
    name: str
    colour: tuple[int, int, int]
    n_pixels: int
    area_mm2: float
    percent_of_tissue: float


def class_areas(tissue_map: TissueMap) -> list[ClassArea]:
    """Area of each class on level s0, in mm² and percent of the tissue, counted band by band."""
    counts = np.zeros(len(tissue_map.classes) + 1, dtype=np.int64)
    for _, band in tissue_map.label_bands():
        counts += np.bincount(band.ravel(), minlength=counts.size)[: counts.size]
    tissue_pixels = int(counts[1:].sum())
    pixel_mm2 = (tissue_map.map_mpp / 1000.0) ** 2
    areas = []
    for cls in tissue_map.classes.classes:
        n_pixels = int(counts[cls.map_value])
        percent = 100.0 * n_pixels / tissue_pixels if tissue_pixels else 0.0
        areas.append(ClassArea(cls.code, cls.name, cls.colour, n_pixels, n_pixels * pixel_mm2, percent))
    return areas
