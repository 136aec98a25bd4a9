from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from histo_daen.cli import cli

from histo_daen.data.luad import check_luad


def test_synth_dataset_writes_a_valid_luad_folder(tmp_path: Path) -> None:
    args = ["synth-dataset", "-o", str(tmp_path / "synth"), "--n-train", "4", "--n-val", "2", "--n-test", "1"]
    result = CliRunner().invoke(cli, [*args, "--patch-size", "48", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert f"4 train, 2 val, 1 test patches: {tmp_path / 'synth'}" in result.stdout
    records = check_luad(tmp_path / "synth")
    assert [len(records[s]) for s in ("train", "val", "test")] == [4, 2, 1]


def test_synth_dataset_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "notes.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["synth-dataset", "-o", str(tmp_path / "synth"), "--n-train", "1"])
    assert result.exit_code == 1
    assert "Error: " in result.output and "synth: exists and is not empty. Pass --overwrite" in result.output
    assert (tmp_path / "synth" / "notes.txt").read_text() == "mine"
    assert "Traceback" not in result.output
