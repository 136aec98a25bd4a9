"""The one class table."""

from __future__ import annotations

from histo_daen.classes import BCSS, LUAD, class_set, class_set_for


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


def test_class_set_for_returns_the_known_set_when_codes_match() -> None:
    assert class_set_for("luad", ("TE", "NEC", "LYM", "TAS")) is LUAD


def test_class_set_for_builds_a_custom_set_with_distinct_colours() -> None:
    custom = class_set_for("custom", ["aeroplane", "bicycle", "bird"])
    assert custom.codes == ("aeroplane", "bicycle", "bird")
    assert len(set(custom.colours)) == 3 and (255, 255, 255) not in custom.colours
    assert custom.exclude_index == 4


def test_class_set_for_keeps_stored_colours() -> None:
    custom = class_set_for("custom", ["a", "b"], colours=[[1, 2, 3], [4, 5, 6]], names=["alpha", "beta"])
    assert custom.colours == ((1, 2, 3), (4, 5, 6))
    assert custom.classes[1].name == "beta"
