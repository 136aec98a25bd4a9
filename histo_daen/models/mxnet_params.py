"""A pure-numpy reader of MXNet's NDArray list files (``.params``), so ImageNet weights load without MXNet.

SEAM, DAEN and MLPS start from Zifeng Wu's ImageNet ResNet38 ("model A1"), shipped as the MXNet file
``ilsvrc-cls_rna-a1_cls1000_ep-0001.params`` and converted by ``mxnet.nd.load``. This module reads the same
binary layout with ``struct`` and numpy only.

**Not checked against the original file.** The layout below was implemented from MXNet's source code and
tested on files our tests write in that layout; the original ``ilsvrc-cls_rna-a1_cls1000_ep-0001.params`` was
not available. If it fails to read, the error says where in the file parsing stopped.

Binary layout (all integers little-endian; sources: apache/mxnet ``src/ndarray/ndarray.cc``
``NDArray::Save``/``NDArray::Load``/``LegacyLoad``/``LegacyTShapeLoad``, ``include/nnvm/tuple.h`` and
``include/mxnet/tuple.h`` ``Tuple::Save``/``Load``, ``include/mxnet/base.h`` ``Context::Save``, dmlc-core
``serializer.h`` for vectors and strings)::

    file    := uint64 0x112 (kMXAPINDArrayListMagic) | uint64 0 (reserved)
               | uint64 n_arrays | array * n_arrays
               | uint64 n_names  | name * n_names          (n_names is 0 or n_arrays)
    name    := uint64 n_bytes | n_bytes of UTF-8 text       e.g. "arg:conv1a_weight", "aux:bn7_moving_var"
    array   := v2 | v1 | legacy                              (told apart by the first uint32)
    v2      := uint32 0xF993FAC9 (or 0xF993FACA, "v3": numpy shape semantics)
               | int32 storage_type                          (0 dense; 1 row-sparse and 2 CSR are refused)
               | shape64 | [context | int32 dtype | data]    (the bracket is absent when the shape is empty)
    v1      := uint32 0xF993FAC8 | shape64 | [context | int32 dtype | data]
    legacy  := uint32 ndim | uint32 dim * ndim | [context | int32 dtype | data]     (MXNet before nnvm, ~2016)
    shape64 := uint32 ndim | int64 dim * ndim                (v3: int32 ndim, -1 = unknown shape = empty array)
    context := int32 device_type (1 cpu, 2 gpu, 3 cpu_pinned, ...) | int32 device_id   (ignored here)
    data    := prod(shape) elements of dtype, C order
    dtype   := 0 float32 | 1 float64 | 2 float16 | 3 uint8 | 4 int32 | 5 int8 | 6 int64   (mshadow type flags)

An empty shape (``ndim == 0``; v3: ``ndim == -1``) marks a "none" array that has no context, dtype or data;
it is returned as a zero-size float32 array. In v3 ``ndim == 0`` is a scalar with one element.
"""

from __future__ import annotations

import logging
import os
import struct
from io import BufferedIOBase
from pathlib import Path

import numpy as np

from histo_daen.errors import WeightsError

__all__ = [
    "LIST_MAGIC",
    "NDARRAY_V1_MAGIC",
    "NDARRAY_V2_MAGIC",
    "NDARRAY_V3_MAGIC",
    "is_mxnet_params",
    "read_mxnet_params",
]

logger = logging.getLogger(__name__)

LIST_MAGIC = 0x112
NDARRAY_V1_MAGIC = 0xF993FAC8
NDARRAY_V2_MAGIC = 0xF993FAC9
NDARRAY_V3_MAGIC = 0xF993FACA

# mshadow type flags -> little-endian numpy dtypes.
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("<f8"),
    2: np.dtype("<f2"),
    3: np.dtype("u1"),
    4: np.dtype("<i4"),
    5: np.dtype("i1"),
    6: np.dtype("<i8"),
}
_MAX_NDIM = 32  # MXNet's own limit is far lower; anything above means we are not reading a shape
_MAX_NAME_BYTES = 4096
_HINT = "Pass the MXNet .params file that SEAM/DAEN start from, or a PyTorch .pth state dict."


class _Reader:
    """Sequential little-endian reads that fail with a WeightsError naming the file and the byte offset."""

    def __init__(self, handle: BufferedIOBase, path: Path, size: int) -> None:
        self.handle, self.path, self.size = handle, path, size

    @property
    def offset(self) -> int:
        return self.handle.tell()

    def fail(self, problem: str) -> WeightsError:
        return WeightsError(self.path, f"is not a readable MXNet NDArray file: {problem} at byte {self.offset}", _HINT)

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        n_bytes = struct.calcsize(fmt)
        raw = self.handle.read(n_bytes)
        if len(raw) != n_bytes:
            raise self.fail(f"the file ends inside {what} (truncated?)")
        return struct.unpack(fmt, raw)

    def uint32(self, what: str) -> int:
        return self.unpack("<I", what)[0]

    def int32(self, what: str) -> int:
        return self.unpack("<i", what)[0]

    def uint64(self, what: str) -> int:
        return self.unpack("<Q", what)[0]

    def array(self, dtype: np.dtype, shape: tuple[int, ...], what: str) -> np.ndarray:
        count = int(np.prod(shape, dtype=np.int64))
        n_bytes = count * dtype.itemsize
        if n_bytes > self.size - self.offset:
            # Checked before allocating, so a random binary cannot ask for terabytes.
            raise self.fail(f"{what} needs {n_bytes} bytes but only {self.size - self.offset} remain (truncated?)")
        out = np.empty(shape, dtype=dtype)
        # out.data is memoryview(out); numpy's stubs give ndarray the buffer protocol for Python >= 3.12 only.
        if n_bytes and self.handle.readinto(out.data.cast("B")) != n_bytes:
            raise self.fail(f"the file ends inside {what} (truncated?)")
        return out


def is_mxnet_params(path: str | os.PathLike[str]) -> bool:
    """Whether a file starts with MXNet's NDArray-list header (the first 16 bytes: magic 0x112, then 0)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    return len(head) == 16 and struct.unpack("<QQ", head) == (LIST_MAGIC, 0)


def _read_shape(reader: _Reader, magic: int, what: str) -> tuple[int, ...] | None:
    """The array's shape, or None for an empty ("none") array; ``magic`` chooses the shape encoding."""
    if magic in (NDARRAY_V1_MAGIC, NDARRAY_V2_MAGIC, NDARRAY_V3_MAGIC):
        ndim = reader.int32(f"the shape of {what}")
        if magic == NDARRAY_V3_MAGIC and ndim == -1:
            return None
        if not 0 <= ndim <= _MAX_NDIM:
            raise reader.fail(f"{what} has an implausible number of dimensions ({ndim})")
        dims = reader.unpack(f"<{ndim}q", f"the shape of {what}") if ndim else ()
        if ndim == 0 and magic != NDARRAY_V3_MAGIC:
            return None
    else:
        ndim = magic  # legacy files have no magic: the first uint32 is the number of dimensions
        if not 0 <= ndim <= _MAX_NDIM:
            raise reader.fail(f"{what} starts with 0x{magic:08X}, neither an NDArray magic nor a dimension count")
        dims = reader.unpack(f"<{ndim}I", f"the shape of {what}") if ndim else ()
        if ndim == 0:
            return None
    if any(d < 0 for d in dims):
        raise reader.fail(f"{what} has a negative dimension in its shape {dims}")
    return tuple(int(d) for d in dims)


def _read_array(reader: _Reader, index: int) -> np.ndarray:
    what = f"array {index}"
    magic = reader.uint32(f"the header of {what}")
    if magic in (NDARRAY_V2_MAGIC, NDARRAY_V3_MAGIC):
        storage_type = reader.int32(f"the storage type of {what}")
        if storage_type != 0:
            raise reader.fail(f"{what} uses sparse storage (type {storage_type}); weights files hold dense arrays")
    shape = _read_shape(reader, magic, what)
    if shape is None:
        return np.zeros((0,), dtype=np.float32)
    reader.unpack("<ii", f"the device of {what}")
    type_flag = reader.int32(f"the dtype of {what}")
    if type_flag not in _DTYPES:
        raise reader.fail(f"{what} has unknown dtype flag {type_flag} (known: {sorted(_DTYPES)})")
    return reader.array(_DTYPES[type_flag], shape, what)


def read_mxnet_params(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read an MXNet NDArray list file (what ``mxnet.nd.save`` writes) into numpy arrays, without MXNet.

    Args:
        path: the ``.params`` file.

    Returns:
        ``{name: array}`` in file order, names as stored (with MXNet's ``arg:``/``aux:`` prefixes, if any);
        arrays keep their stored dtype (float32 for the ResNet38 weights) and shape (conv weights
        ``(out, in, kh, kw)``), native byte order, writable.

    Raises:
        WeightsError: the file is missing, not an NDArray list, truncated, holds sparse or unnamed arrays, or an
            unknown dtype; the message names the file and the byte offset where reading stopped.
    """
    source = Path(path)
    try:
        size = source.stat().st_size
        handle = open(source, "rb")  # noqa: SIM115 - closed in the with-block below
    except FileNotFoundError:
        raise WeightsError(source, "does not exist", "Check the path to the weights file.") from None
    except OSError as err:
        raise WeightsError(
            source, f"cannot be read ({err.strerror or err})", "Check the path and permissions."
        ) from err
    with handle:
        reader = _Reader(handle, source, size)
        header = reader.unpack("<QQ", "the file header")
        if header[0] != LIST_MAGIC:
            raise WeightsError(
                source, f"is not an MXNet NDArray file (header 0x{header[0]:X}, expected 0x{LIST_MAGIC:X})", _HINT
            )
        n_arrays = reader.uint64("the array count")
        # Each array takes at least 4 bytes, which bounds a plausible count before the loop starts.
        if n_arrays > (size - reader.offset) // 4:
            raise reader.fail(f"the array count {n_arrays} cannot fit in a {size}-byte file")
        arrays = [_read_array(reader, index) for index in range(n_arrays)]
        n_names = reader.uint64("the name count")
        if n_names == 0:
            raise WeightsError(source, f"holds {n_arrays} unnamed arrays, not named parameters", _HINT)
        if n_names != n_arrays:
            raise reader.fail(f"{n_names} names for {n_arrays} arrays")
        names = []
        for index in range(n_names):
            n_bytes = reader.uint64(f"the length of name {index}")
            if n_bytes > _MAX_NAME_BYTES:
                raise reader.fail(f"name {index} claims {n_bytes} bytes")
            raw = handle.read(n_bytes)
            if len(raw) != n_bytes:
                raise reader.fail(f"the file ends inside name {index} (truncated?)")
            try:
                names.append(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise reader.fail(f"name {index} is not UTF-8 text") from err
        if len(set(names)) != len(names):
            raise reader.fail("a parameter name occurs twice")
        trailing = size - reader.offset
    if trailing:
        # MXNet itself never looks past the names, so neither do we; but say so, it may mean a damaged file.
        logger.warning("%s: %d bytes after the last parameter name were ignored", source, trailing)
    return dict(zip(names, arrays, strict=True))
