"""Outputs appear whole or not at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from histo_daen.atomic import (
    atomic_dir,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    make_durable,
    partial_dir_for,
)


def test_atomic_write_replaces_the_target_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "manifest.csv"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv"]  # no stray temporary file


def test_atomic_write_creates_missing_parent_folders(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "a" / "b" / "c.json", "{}")
    assert target.read_text() == "{}"


def test_atomic_dir_renames_a_complete_folder(tmp_path: Path) -> None:
    target = tmp_path / "map.zarr"
    with atomic_dir(target) as partial:
        assert partial == partial_dir_for(target)
        (partial / "x").write_text("1")
        assert not target.exists()
    assert (target / "x").read_text() == "1"
    assert not partial_dir_for(target).exists()


def test_atomic_dir_keeps_the_partial_folder_for_resume(tmp_path: Path) -> None:
    target = tmp_path / "tiles"
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as partial:
        (partial / "tile_0.png").write_bytes(b"png")
        raise KeyboardInterrupt
    assert not target.exists()
    assert (partial_dir_for(target) / "tile_0.png").exists()
    with atomic_dir(target) as partial:  # the next run continues in the same folder
        assert (partial / "tile_0.png").exists()
    assert (target / "tile_0.png").exists()


def test_atomic_write_gives_the_mode_of_a_normally_created_file(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert stat.S_IMODE(os.stat(written).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_make_durable_fsyncs_the_files_and_folders_it_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [atomic_write_bytes(tmp_path / f"t{index}.png", b"x" * index, durable=False) for index in range(20)]
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    make_durable(files, folders=[tmp_path])
    assert len(synced) == 21  # each file, then the folder holding their names
    with pytest.raises(FileNotFoundError):
        make_durable([tmp_path / "missing.png"])
