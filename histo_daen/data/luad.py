"""LUAD-HistoSeg (Han et al., MedIA 2022): layout, labels in file names, palette masks (reference.md §6.1-6.3).

Training names carry the patch-level label as four space-separated digits in the order TE, NEC, LYM, TAS
(``1031280-2300-27920-[1 0 0 1].png``); val/test names normally carry none, and masks hold class indices with
4 = white background / exclude. Patches are 224 x 224 RGB at 10x (about 1 micron per pixel).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from histo_daen.classes import LUAD
from histo_daen.data.patch_folder import SPLITS, FolderLayout, PatchRecord, Split, check_patch_folder

__all__ = ["LUAD_LAYOUT", "LUAD_MPP", "check_luad", "parse_luad_label"]

LUAD_MPP = 1.0  # microns per pixel of the patches: 10x of a ~0.25 um/px 40x scan (reference.md §6.1, unverified)

# The label is the last [...] before ".png"; its content is checked separately so a malformed label is reported as
# such rather than as a missing one. An optional hyphen: one redistributed copy has "55944[1 0 0 1].png".
_BRACKET = re.compile(r"-?\[(?P<inner>[^\[\]]*)\]\.png$")
_DIGITS = re.compile(r"([01])\s*([01])\s*([01])\s*([01])")


def parse_luad_label(inner: str) -> tuple[int, ...] | None:
    """``"1 0 0 1"`` -> ``(1, 0, 0, 1)`` in the order TE, NEC, LYM, TAS; None unless exactly four 0/1 digits."""
    found = _DIGITS.fullmatch(inner)
    return None if found is None else tuple(int(d) for d in found.groups())


LUAD_LAYOUT = FolderLayout(
    title="LUAD-HistoSeg",
    class_set=LUAD,
    split_folders={"train": ("train", "training"), "val": ("val", "valid"), "test": ("test",)},
    label_bracket=_BRACKET,
    parse_label=parse_luad_label,
    label_example="-[1 0 0 1].png",
)


def check_luad(
    root: str | os.PathLike[str],
    *,
    splits: Sequence[Split] = SPLITS,
    required: Sequence[Split] = ("train",),
    open_files: bool = True,
    progress: bool = False,
) -> dict[Split, list[PatchRecord]]:
    """Validate a LUAD-HistoSeg folder and list its patches; see :func:`check_patch_folder`."""
    return check_patch_folder(
        root, LUAD_LAYOUT, splits=splits, required=required, open_files=open_files, progress=progress
    )
