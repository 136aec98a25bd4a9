"""The MXNet .params reader, on files written here byte by byte in the layout its docstring documents."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from histo_daen.errors import WeightsError
from histo_daen.models.mxnet_params import (
    NDARRAY_V1_MAGIC,
    NDARRAY_V2_MAGIC,
    NDARRAY_V3_MAGIC,
    is_mxnet_params,
    read_mxnet_params,
)

TYPE_FLAGS = {np.dtype("float32"): 0, np.dtype("float64"): 1, np.dtype("float16"): 2, np.dtype("uint8"): 3}
CPU_CONTEXT = struct.pack("<ii", 1, 0)


def encode_array(array: np.ndarray, version: str = "v2") -> bytes:
    """One NDArray record as MXNet writes it (see the layout in histo_daen/models/mxnet_params.py)."""
    shape = array.shape
    if version == "legacy":
        head = struct.pack(f"<I{len(shape)}I", len(shape), *shape)
    elif version == "v1":
        head = struct.pack(f"<II{len(shape)}q", NDARRAY_V1_MAGIC, len(shape), *shape)
    else:
        magic = NDARRAY_V3_MAGIC if version == "v3" else NDARRAY_V2_MAGIC
        head = struct.pack(f"<IiI{len(shape)}q", magic, 0, len(shape), *shape)
    body = struct.pack("<i", TYPE_FLAGS[array.dtype]) + array.astype(array.dtype.newbyteorder("<")).tobytes()
    return head + CPU_CONTEXT + body


def encode_file(arrays: Mapping[str, np.ndarray], version: str = "v2") -> bytes:
    out = struct.pack("<QQQ", 0x112, 0, len(arrays))
    out += b"".join(encode_array(a, version) for a in arrays.values())
    out += struct.pack("<Q", len(arrays))
    for name in arrays:
        out += struct.pack("<Q", len(name.encode())) + name.encode()
    return out


@pytest.fixture
def resnet_like_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "arg:conv1a_weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "arg:bn7_gamma": rng.standard_normal(5).astype(np.float32),
        "aux:bn7_moving_var": rng.random(5).astype(np.float64),
        "arg:linear1000_bias": rng.standard_normal(7).astype(np.float16),
        "arg:labels": np.arange(6, dtype=np.uint8).reshape(2, 3),
    }


def test_hand_written_bytes_read_as_the_documented_values(tmp_path: Path) -> None:
    # One float32 array [1.5, -2.0] named "w", spelled out field by field.
    data = (
        bytes.fromhex("1201000000000000")  # list magic 0x112
        + bytes.fromhex("0000000000000000")  # reserved
        + bytes.fromhex("0100000000000000")  # 1 array
        + bytes.fromhex("c9fa93f9")  # NDArray v2 magic 0xF993FAC9
        + bytes.fromhex("00000000")  # dense storage
        + bytes.fromhex("010000000200000000000000")  # ndim 1, dim 2 (int64)
        + bytes.fromhex("0100000000000000")  # cpu, device 0
        + bytes.fromhex("00000000")  # float32
        + bytes.fromhex("0000c03f000000c0")  # 1.5, -2.0
        + bytes.fromhex("0100000000000000")  # 1 name
        + bytes.fromhex("0100000000000000")
        + b"w"
    )
    path = tmp_path / "tiny.params"
    path.write_bytes(data)

    params = read_mxnet_params(path)

    assert list(params) == ["w"]
    assert params["w"].dtype == np.float32
    assert params["w"].tolist() == [1.5, -2.0]


@pytest.mark.parametrize("version", ["v2", "v1", "legacy", "v3"])
def test_every_array_comes_back_with_its_name_shape_dtype_and_values(
    tmp_path: Path, resnet_like_arrays: dict[str, np.ndarray], version: str
) -> None:
    path = tmp_path / f"{version}.params"
    path.write_bytes(encode_file(resnet_like_arrays, version))

    params = read_mxnet_params(path)

    assert list(params) == list(resnet_like_arrays)  # file order kept
    for name, expected in resnet_like_arrays.items():
        assert params[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(params[name], expected)
    assert params["arg:conv1a_weight"].flags.writeable  # torch.from_numpy would warn on a read-only array


def test_an_empty_array_reads_as_zero_size_and_the_next_array_still_reads(tmp_path: Path) -> None:
    empty_v2 = struct.pack("<IiI", NDARRAY_V2_MAGIC, 0, 0)  # ndim 0: no context, dtype or data follow
    after = np.array([3.0], dtype=np.float32)
    data = struct.pack("<QQQ", 0x112, 0, 2) + empty_v2 + encode_array(after) + struct.pack("<Q", 2)
    data += struct.pack("<Q", 1) + b"a" + struct.pack("<Q", 1) + b"b"
    path = tmp_path / "empty.params"
    path.write_bytes(data)

    params = read_mxnet_params(path)

    assert params["a"].size == 0
    assert params["b"].tolist() == [3.0]


def test_a_v3_scalar_has_one_value(tmp_path: Path) -> None:
    path = tmp_path / "scalar.params"
    path.write_bytes(encode_file({"s": np.array(7.0, dtype=np.float32)}, "v3"))

    assert read_mxnet_params(path)["s"].shape == ()
    assert float(read_mxnet_params(path)["s"]) == 7.0


def test_is_mxnet_params_looks_at_the_header_not_the_suffix(tmp_path: Path) -> None:
    real = tmp_path / "weights.bin"
    real.write_bytes(encode_file({"w": np.zeros(2, np.float32)}))
    fake = tmp_path / "fake.params"
    fake.write_bytes(b"PK\x03\x04 a zip archive, as torch.save writes")

    assert is_mxnet_params(real)
    assert not is_mxnet_params(fake)
    assert not is_mxnet_params(tmp_path / "missing.params")


def test_missing_file_is_a_weights_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"nothere\.params: does not exist"):
        read_mxnet_params(tmp_path / "nothere.params")


def test_random_bytes_are_not_an_mxnet_file(tmp_path: Path) -> None:
    path = tmp_path / "noise.params"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())

    with pytest.raises(WeightsError, match=r"noise\.params: is not an MXNet NDArray file \(header 0x"):
        read_mxnet_params(path)


@pytest.mark.parametrize("keep_fraction", [0.01, 0.3, 0.6, 0.97])
def test_a_truncated_file_says_truncated_and_where(
    tmp_path: Path, resnet_like_arrays: dict[str, np.ndarray], keep_fraction: float
) -> None:
    data = encode_file(resnet_like_arrays)
    path = tmp_path / "cut.params"
    path.write_bytes(data[: max(17, int(len(data) * keep_fraction))])

    with pytest.raises(WeightsError, match=r"cut\.params: is not a readable MXNet NDArray file: .*truncated.* at byte"):
        read_mxnet_params(path)


def test_a_huge_array_count_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "count.params"
    path.write_bytes(struct.pack("<QQQ", 0x112, 0, 2**40) + b"\0" * 64)

    with pytest.raises(WeightsError, match=r"array count 1099511627776 cannot fit"):
        read_mxnet_params(path)


def test_sparse_arrays_are_refused(tmp_path: Path) -> None:
    row_sparse = struct.pack("<Ii", NDARRAY_V2_MAGIC, 1) + b"\0" * 64
    path = tmp_path / "sparse.params"
    path.write_bytes(struct.pack("<QQQ", 0x112, 0, 1) + row_sparse)

    with pytest.raises(WeightsError, match=r"array 0 uses sparse storage \(type 1\)"):
        read_mxnet_params(path)


def test_an_unknown_dtype_flag_is_refused(tmp_path: Path) -> None:
    record = struct.pack("<IiIq", NDARRAY_V2_MAGIC, 0, 1, 2) + CPU_CONTEXT + struct.pack("<i", 42) + b"\0" * 16
    path = tmp_path / "dtype.params"
    path.write_bytes(struct.pack("<QQQ", 0x112, 0, 1) + record)

    with pytest.raises(WeightsError, match=r"array 0 has unknown dtype flag 42"):
        read_mxnet_params(path)


def test_unnamed_arrays_are_not_parameters(tmp_path: Path) -> None:
    data = struct.pack("<QQQ", 0x112, 0, 1) + encode_array(np.zeros(2, np.float32)) + struct.pack("<Q", 0)
    path = tmp_path / "list.params"
    path.write_bytes(data)

    with pytest.raises(WeightsError, match=r"list\.params: holds 1 unnamed arrays"):
        read_mxnet_params(path)


def test_trailing_bytes_are_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tail.params"
    path.write_bytes(encode_file({"w": np.ones(3, np.float32)}) + b"\0" * 5)

    params = read_mxnet_params(path)

    assert params["w"].tolist() == [1.0, 1.0, 1.0]
    assert "5 bytes after the last parameter name were ignored" in caplog.text
