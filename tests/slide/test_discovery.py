"""find_slides: files, folders and globs become one sorted list; unusable inputs become errors, not crashes."""

from __future__ import annotations

from pathlib import Path

from histo_daen.slide.discovery import find_slides


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"II*\x00")
    return path


def test_folders_give_their_slide_files_sorted(tmp_path: Path) -> None:
    b, a = _touch(tmp_path / "b.svs"), _touch(tmp_path / "a.TIFF")
    _touch(tmp_path / "a.mask.png")
    _touch(tmp_path / ".hidden.svs")
    _touch(tmp_path / "sub" / "c.svs")  # not recursive
    found = find_slides([tmp_path])
    assert found.slides == (a, b) and found.problems == ()


def test_files_globs_and_duplicates(tmp_path: Path) -> None:
    a, b = _touch(tmp_path / "x" / "a.svs"), _touch(tmp_path / "y" / "b.ndpi")
    notes = _touch(tmp_path / "notes.txt")  # named explicitly: open_slide will judge it
    found = find_slides([str(tmp_path / "*" / "*.svs"), b, a, notes, str(tmp_path / "y")])
    assert found.slides == (notes, a, b)


def test_problems_name_the_input(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    found = find_slides([tmp_path / "missing.svs", tmp_path / "empty", str(tmp_path / "*.svs")])
    assert found.slides == ()
    messages = [str(problem) for problem in found.problems]
    assert messages[0].endswith("missing.svs: does not exist. Check the path and its spelling.")
    assert "empty: is a folder with no slide files in it. Slide names end in .svs, .tif" in messages[1]
    assert messages[2].endswith("*.svs: matches no slide files. Check the pattern and the folder.")
