from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histo_daen.data.bcss import check_bcss, parse_bcss_label
from histo_daen.errors import DatasetError


def test_parse_bcss_label_reads_contiguous_digits_in_tum_str_lym_nec_order() -> None:
    assert parse_bcss_label("1101") == (1, 1, 0, 1)
    assert parse_bcss_label("1 1 0 1") is None  # BCSS-WSSS writes the digits without spaces


def test_check_bcss_reads_the_reference_file_name(tmp_path: Path) -> None:
    name = "TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500+0[1101].png"
    (tmp_path / "train").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "train" / name)
    records = check_bcss(tmp_path)
    assert records["train"][0].label == (1, 1, 0, 1)


def test_check_bcss_reports_luad_style_labels_as_missing(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "train" / "a-0-0-[1 0 0 1].png")
    with pytest.raises(DatasetError, match=r"1 malformed label .*BCSS-WSSS.*\+0\[1101\]\.png.*TUM STR LYM NEC"):
        check_bcss(tmp_path)
