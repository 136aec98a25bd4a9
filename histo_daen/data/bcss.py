"""BCSS-WSSS (Han et al., the LUAD-HistoSeg authors' breast companion): same layout, other label syntax.

Classes TUM, STR, LYM, NEC; labels are four contiguous digits in brackets before ``.png``
(``TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500+0[1101].png``); masks use index 4 for white, which in breast
tissue is mostly fat (reference.md §6.6).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from histo_daen.classes import BCSS
from histo_daen.data.patch_folder import SPLITS, FolderLayout, PatchRecord, Split, check_patch_folder

__all__ = ["BCSS_LAYOUT", "check_bcss", "parse_bcss_label"]

_BRACKET = re.compile(r"\[(?P<inner>[^\[\]]*)\]\.png$")
_DIGITS = re.compile(r"([01])([01])([01])([01])")


def parse_bcss_label(inner: str) -> tuple[int, ...] | None:
    """``"1101"`` -> ``(1, 1, 0, 1)`` in the order TUM, STR, LYM, NEC; None unless exactly four 0/1 digits."""
    found = _DIGITS.fullmatch(inner)
    return None if found is None else tuple(int(d) for d in found.groups())


BCSS_LAYOUT = FolderLayout(
    title="BCSS-WSSS",
    class_set=BCSS,
    split_folders={"train": ("train", "training"), "val": ("val", "valid"), "test": ("test",)},
    label_bracket=_BRACKET,
    parse_label=parse_bcss_label,
    label_example="+0[1101].png",
)


def check_bcss(
    root: str | os.PathLike[str],
    *,
    splits: Sequence[Split] = SPLITS,
    required: Sequence[Split] = ("train",),
    open_files: bool = True,
    progress: bool = False,
) -> dict[Split, list[PatchRecord]]:
    """Validate a BCSS-WSSS folder and list its patches; see :func:`check_patch_folder`."""
    return check_patch_folder(
        root, BCSS_LAYOUT, splits=splits, required=required, open_files=open_files, progress=progress
    )
