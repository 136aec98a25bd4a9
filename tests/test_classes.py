"""The one class table."""

from __future__ import annotations

from histo_daen.classes import BCSS, LUAD, class_set


def test_luad_order_and_colours_match_the_dataset() -> None:
    assert LUAD.codes == ("TE", "NEC", "LYM", "TAS")
    assert LUAD.by_code("LYM").colour == (65, 105, 225)
    assert [c.map_value for c in LUAD.classes] == [1, 2, 3, 4]


def test_palette_has_classes_then_white_exclude_then_zeros() -> None:
    palette = LUAD.palette()
    assert len(palette) == 768
    assert palette[:15] == [205, 51, 51, 0, 255, 0, 65, 105, 225, 255, 165, 0, 255, 255, 255]
    assert set(palette[15:]) == {0}


def test_class_sets_by_name() -> None:
    assert class_set("bcss") is BCSS
    assert BCSS.codes == ("TUM", "STR", "LYM", "NEC")
