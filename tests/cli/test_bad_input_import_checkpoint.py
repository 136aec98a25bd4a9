"""``histo-daen import-checkpoint``: its whole bad-input contract (outputs, files that are not SEAM or MLPS).

Unreadable and refused files are in ``test_import_checkpoint.py``. Each case: the input, the one line the user sees,
the exit code, and what is on disk afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.mark.parametrize("case", ["under_a_file", "unwritable", "a_folder", "exists"])
def test_an_output_file_that_cannot_be_used_is_one_error_and_changes_nothing(
    invoke: Callable[..., Any],
    bad_output: Callable[..., Any],
    disk_state: Callable[..., Any],
    segment_checkpoint: Path,
    tmp_path: Path,
    case: str,
) -> None:
    bad = bad_output(case, "imported.pt")
    before = disk_state(tmp_path)
    outcome = invoke("import-checkpoint", segment_checkpoint, "-o", bad.path, "--classes", "luad")
    assert outcome.code == 1 and bad.words in outcome.error
    assert disk_state(tmp_path) == before


def test_the_output_may_not_be_the_source(invoke: Callable[..., Any], segment_checkpoint: Path) -> None:
    before = segment_checkpoint.read_bytes()
    outcome = invoke(
        "import-checkpoint", segment_checkpoint, "-o", segment_checkpoint, "--classes", "luad", "--overwrite"
    )
    assert outcome.code == 1
    assert outcome.error == (
        f"Error: {segment_checkpoint}: is, or holds, the input {segment_checkpoint}. Write the output somewhere else."
    )
    assert segment_checkpoint.read_bytes() == before


@pytest.mark.parametrize("classes", [["--classes", "luad"], []])
def test_a_histo_daen_checkpoint_is_named_as_one(
    invoke: Callable[..., Any], segment_checkpoint: Path, tmp_path: Path, classes: list[str]
) -> None:
    outcome = invoke("import-checkpoint", segment_checkpoint, "-o", tmp_path / "imported.pt", *classes)
    assert outcome.code == 1
    assert outcome.error == (
        f"Error: {segment_checkpoint}: is already a histo-daen checkpoint (TE, NEC, LYM, TAS): there is nothing to "
        "import. Pass it wherever a --checkpoint is taken (evaluate, segment); import-checkpoint converts SEAM and "
        "MLPS stage-1 checkpoints."
    )
    assert "torchvision" not in outcome.stderr and "backbone" not in outcome.stderr
    assert not (tmp_path / "imported.pt").exists()


def test_key_value_overrides_are_taken_as_the_config_help_says(
    invoke: Callable[..., Any], segment_checkpoint: Path, tmp_path: Path
) -> None:
    outcome = invoke("import-checkpoint", segment_checkpoint, "-o", tmp_path / "i.pt", "classes=luad", "variant=vgg")
    assert outcome.code == 1
    assert outcome.error.startswith("Error: options: variant: 'vgg' is not one of auto, seam, cam")
