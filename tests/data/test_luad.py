from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histo_daen.classes import LUAD
from histo_daen.data.luad import check_luad, parse_luad_label
from histo_daen.data.masks import write_mask
from histo_daen.errors import DatasetError

from .conftest import write_luad_folder


@pytest.mark.parametrize(
    ("inner", "expected"),
    [("1 0 0 1", (1, 0, 0, 1)), ("0 1 1 0", (0, 1, 1, 0)), ("1001", (1, 0, 0, 1)), ("1 2 0 0", None), ("1 0 0", None)],
)
def test_parse_luad_label_reads_four_binary_digits_in_te_nec_lym_tas_order(
    inner: str, expected: tuple[int, ...] | None
) -> None:
    assert parse_luad_label(inner) == expected


def test_check_luad_lists_every_split_with_labels_and_masks(luad_folder: Path) -> None:
    records = check_luad(luad_folder)
    assert [len(records[s]) for s in ("train", "val", "test")] == [3, 2, 2]
    first = records["train"][0]
    assert first.name == "1000-0-0-[1 0 0 1].png" and first.label == (1, 0, 0, 1) and first.mask is None
    val = records["val"][0]
    assert val.label is None
    assert val.mask == luad_folder / "val" / "mask" / val.name


def test_check_luad_accepts_training_and_valid_folder_names(tmp_path: Path) -> None:
    root = write_luad_folder(tmp_path / "copy", train_dir="training", test=0)
    (root / "val").rename(root / "valid")
    records = check_luad(root, splits=("train", "val"))
    assert len(records["train"]) == 3 and len(records["val"]) == 2


def test_check_luad_skips_dotfiles_and_other_files(luad_folder: Path, make_png: Callable[..., Path]) -> None:
    make_png(luad_folder / "train" / "._1000-0-0-[1 0 0 1].png")
    (luad_folder / "train" / "notes.txt").write_text("stray file")
    make_png(luad_folder / "train" / "thumbs.jpg")
    assert len(check_luad(luad_folder)["train"]) == 3


def test_check_luad_reads_labels_optionally_from_val_names(luad_folder: Path, make_png: Callable[..., Path]) -> None:
    # One redistributed copy names a test patch "387709-10004-55944[1 0 0 1].png" (no hyphen before the label).
    name = "387709-10004-55944[1 0 0 1].png"
    make_png(luad_folder / "test" / "img" / name)
    write_mask(luad_folder / "test" / "mask" / name, np.zeros((16, 16), dtype=np.uint8), LUAD)
    labelled = [r for r in check_luad(luad_folder)["test"] if r.name == name]
    assert labelled[0].label == (1, 0, 0, 1)


def test_missing_root_is_named_with_the_expected_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nowhere: is not a folder .*train/<name>-\[1 0 0 1\]\.png"):
        check_luad(tmp_path / "nowhere")


def test_missing_train_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: has no train/ or training/ folder"):
        check_luad(tmp_path / "empty")


def _message(root: Path) -> str:
    with pytest.raises(DatasetError) as caught:
        check_luad(root)
    return str(caught.value)


def test_file_name_without_label_is_reported(luad_folder: Path, make_png: Callable[..., Path]) -> None:
    make_png(luad_folder / "train" / "1031280-2300-27920.png")
    message = _message(luad_folder)
    assert "1 file name without a label: train/1031280-2300-27920.png" in message
    assert "TE NEC LYM TAS" in message  # what to do: the label order


def test_malformed_label_is_reported(luad_folder: Path, make_png: Callable[..., Path]) -> None:
    make_png(luad_folder / "train" / "1-0-0-[1 0 2 0].png")
    make_png(luad_folder / "train" / "2-0-0-[1 0 0].png")
    assert "2 malformed labels (not 4 digits of 0 or 1): train/1-0-0-[1 0 2 0].png, train/2-0-0-[1 0 0].png" in (
        _message(luad_folder)
    )


def test_all_zero_label_is_reported(luad_folder: Path, make_png: Callable[..., Path]) -> None:
    make_png(luad_folder / "train" / "1-0-0-[0 0 0 0].png")
    assert "1 all-zero label (a patch must show at least one class): train/1-0-0-[0 0 0 0].png" in (
        _message(luad_folder)
    )


def test_image_without_mask_and_mask_without_image_are_reported(luad_folder: Path) -> None:
    (luad_folder / "val" / "mask" / "2000-0-448.png").unlink()
    (luad_folder / "test" / "img" / "2001-224-448.png").unlink()
    message = _message(luad_folder)
    assert "1 image without a mask: val/img/2000-0-448.png" in message
    assert "1 mask without an image: test/mask/2001-224-448.png" in message


def test_unreadable_png_is_reported(luad_folder: Path) -> None:
    truncated = luad_folder / "train" / "1000-0-0-[1 0 0 1].png"
    truncated.write_bytes(truncated.read_bytes()[:40])
    assert "1 unreadable PNG: train/1000-0-0-[1 0 0 1].png" in _message(luad_folder)


def test_mask_index_above_four_is_reported(luad_folder: Path) -> None:
    Image.fromarray(np.full((16, 16), 7, dtype=np.uint8), mode="L").save(
        luad_folder / "val" / "mask" / "2000-0-448.png"
    )
    assert "1 mask with an index above 4: val/mask/2000-0-448.png (max 7)" in _message(luad_folder)


def test_mask_of_another_size_is_reported(luad_folder: Path) -> None:
    write_mask(luad_folder / "test" / "mask" / "2000-0-448.png", np.zeros((8, 16), dtype=np.uint8), LUAD)
    assert "1 mask whose size differs from its image: test/mask/2000-0-448.png ((16, 8) vs (16, 16))" in (
        _message(luad_folder)
    )


def test_every_problem_is_reported_at_once_with_a_count_and_the_first_files(
    luad_folder: Path, make_png: Callable[..., Path]
) -> None:
    for i in range(5):
        make_png(luad_folder / "train" / f"nolabel-{i}.png")
    make_png(luad_folder / "train" / "z-0-0-[0 0 0 0].png")
    (luad_folder / "val" / "mask" / "2000-0-448.png").unlink()
    message = _message(luad_folder)
    assert message.startswith(f"{luad_folder}: 7 problems in the LUAD-HistoSeg folder:")
    assert "5 file names without a label: train/nolabel-0.png, train/nolabel-1.png, train/nolabel-2.png and 2 more" in (
        message
    )
    assert "1 all-zero label" in message and "1 image without a mask" in message
    assert "\n" not in message
    assert re.search(r"Fix or remove these files", message)


def test_names_only_check_skips_opening_files(luad_folder: Path) -> None:
    truncated = luad_folder / "train" / "1000-0-0-[1 0 0 1].png"
    truncated.write_bytes(b"")
    assert len(check_luad(luad_folder, open_files=False)["train"]) == 3
