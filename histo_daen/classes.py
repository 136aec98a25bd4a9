"""The one place that knows the tissue classes: their order, names, colours, and the dataset palettes.

Two numberings are in use and both live here:

- *dataset index* (``TissueClass.index``): the value in LUAD-HistoSeg / BCSS-WSSS palette masks, 0-based, with
  ``ClassSet.exclude_index`` (4) marking white background to be ignored in scoring.
- *map value* (``TissueClass.map_value``): the value in our slide-level label maps, ``index + 1``, so that 0 can
  mean "no tissue" (NGFF label images reserve 0 for background).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BCSS",
    "LUAD",
    "NO_TISSUE_MAP_VALUE",
    "ClassSet",
    "TissueClass",
    "class_set",
    "class_set_for",
    "class_set_names",
]

RGB = tuple[int, int, int]

NO_TISSUE_MAP_VALUE = 0


@dataclass(frozen=True)
class TissueClass:
    """One tissue class of a dataset.

    Attributes:
        index: value in the dataset's palette masks (0-based) and the channel in CAM tensors.
        code: short name used in files, tables and QuPath (no ':' allowed: QuPath's class delimiter).
        name: long name for people.
        colour: (r, g, b) 0-255, the dataset palette colour.
    """

    index: int
    code: str
    name: str
    colour: RGB

    @property
    def map_value(self) -> int:
        """Value in slide-level label maps: index + 1 (0 means no tissue)."""
        return self.index + 1


@dataclass(frozen=True)
class ClassSet:
    """The classes of one dataset, in channel order, with the exclude (white background) entry of its masks."""

    name: str
    classes: tuple[TissueClass, ...]
    exclude_index: int = 4
    exclude_colour: RGB = (255, 255, 255)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.classes)

    @property
    def colours(self) -> tuple[RGB, ...]:
        return tuple(c.colour for c in self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def by_code(self, code: str) -> TissueClass:
        for cls in self.classes:
            if cls.code == code:
                return cls
        raise KeyError(f"unknown class {code!r} in {self.name}; valid: {', '.join(self.codes)}")

    def palette(self) -> list[int]:
        """The 768-entry (256 colours x RGB) PNG palette: classes, then exclude, the rest 0 (as TPRO/PBIP ship it)."""
        flat = [0] * 768
        for cls in self.classes:
            flat[3 * cls.index : 3 * cls.index + 3] = cls.colour
        flat[3 * self.exclude_index : 3 * self.exclude_index + 3] = self.exclude_colour
        return flat


# LUAD-HistoSeg (Han et al., MedIA 2022): label order [TE, NEC, LYM, TAS] in file names and masks.
LUAD = ClassSet(
    name="luad",
    classes=(
        TissueClass(0, "TE", "tumour epithelium", (205, 51, 51)),
        TissueClass(1, "NEC", "necrosis", (0, 255, 0)),
        TissueClass(2, "LYM", "lymphocytes", (65, 105, 225)),
        TissueClass(3, "TAS", "tumour-associated stroma", (255, 165, 0)),
    ),
)

# BCSS-WSSS: order [TUM, STR, LYM, NEC]; palette as in the WSSS-Tissue code.
BCSS = ClassSet(
    name="bcss",
    classes=(
        TissueClass(0, "TUM", "tumour", (255, 0, 0)),
        TissueClass(1, "STR", "stroma", (0, 255, 0)),
        TissueClass(2, "LYM", "lymphocytic infiltrate", (0, 0, 255)),
        TissueClass(3, "NEC", "necrosis", (153, 0, 255)),
    ),
)

_CLASS_SETS = {cs.name: cs for cs in (LUAD, BCSS)}


def class_set_names() -> tuple[str, ...]:
    return tuple(_CLASS_SETS)


def class_set(name: str) -> ClassSet:
    """The class set of a dataset by name ('luad', 'bcss')."""
    try:
        return _CLASS_SETS[name]
    except KeyError:
        raise KeyError(f"unknown class set {name!r}; valid: {', '.join(_CLASS_SETS)}") from None


# Colours for class sets that are not ours (e.g. an imported VOC checkpoint): distinct, and none is white.
_CUSTOM_COLOURS: tuple[RGB, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
    (219, 219, 141), (158, 218, 229),
)  # fmt: skip


def class_set_for(
    name: str,
    codes: Sequence[str],
    *,
    names: Sequence[str] | None = None,
    colours: Sequence[Sequence[int]] | None = None,
) -> ClassSet:
    """The known class set ``name`` when its codes are ``codes``; otherwise a custom set built from ``codes``.

    Checkpoints imported from other code bases (``histo-daen import-checkpoint --classes A,B,...``) carry class
    codes but no colours; they get distinct generated colours (or ``colours``, e.g. as stored in a map).
    """
    known = _CLASS_SETS.get(name)
    if known is not None and known.codes == tuple(codes):
        return known
    if not codes:
        raise ValueError("a class set needs at least one class")
    names = list(names) if names is not None else list(codes)
    picked = [tuple(int(v) for v in c) for c in colours] if colours is not None else None
    classes = tuple(
        TissueClass(
            index,
            str(code),
            str(names[index]),
            picked[index] if picked else _CUSTOM_COLOURS[index % len(_CUSTOM_COLOURS)],  # type: ignore[arg-type]
        )
        for index, code in enumerate(codes)
    )
    return ClassSet(name=name, classes=classes, exclude_index=max(4, len(codes)))
