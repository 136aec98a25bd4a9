"""``histo-daen import-checkpoint`` from the command line: the summary lines, the checkpoint written, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from histo_daen.cli import cli

from histo_daen.models import build_model, load_model


@pytest.fixture
def mlps_file(tmp_path: Path) -> Path:
    """A (tiny) MLPS stage-1 checkpoint as 1_train_stage1.py saves it: ResNet38 + fc8 with 4 classes."""
    net = build_model(variant="cam", backbone="resnet38", width=0.0625, num_classes=4, background_channel=False)
    path = tmp_path / "stage1_checkpoint_trained_on_luad.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def seam_file(tmp_path: Path) -> Path:
    """A (tiny) SEAM checkpoint trained on LUAD: fc8 = background + 4 classes, PCM."""
    net = build_model(variant="seam", backbone="resnet38", width=0.0625, num_classes=4)
    path = tmp_path / "resnet38_SEAM.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    return path


def test_mlps_checkpoint_is_imported(tmp_path: Path, mlps_file: Path) -> None:
    output = tmp_path / "models" / "mlps_luad.pt"

    result = CliRunner().invoke(cli, ["import-checkpoint", str(mlps_file), "-o", str(output), "--classes", "luad"])

    assert result.exit_code == 0, result.output
    assert "Imported an MLPS stage-1 checkpoint (ResNet38 + fc8): variant cam, 4 classes (TE, NEC, LYM, TAS)" in (
        result.output
    )
    assert "input normalisation none" in result.output
    assert f"Checkpoint written: {output}" in result.output
    loaded = load_model(output)
    assert loaded.classes == ("TE", "NEC", "LYM", "TAS")
    assert loaded.state["source"]["file"] == mlps_file.name


def test_seam_checkpoint_as_cam_says_what_is_not_carried_over(tmp_path: Path, seam_file: Path) -> None:
    output = tmp_path / "seam_cam.pt"

    result = CliRunner().invoke(
        cli, ["import-checkpoint", str(seam_file), "-o", str(output), "--classes", "TE,NEC,LYM,TAS", "--variant", "cam"]
    )

    assert result.exit_code == 0, result.output
    assert "variant cam, background + 4 classes" in result.output
    assert "Not carried over: f8_3, f8_4, f9" in result.output
    assert load_model(output).model_config.variant == "cam"


def test_classes_can_come_from_a_config_file(tmp_path: Path, seam_file: Path) -> None:
    config = tmp_path / "import.yaml"
    config.write_text("classes: luad\ninput_normalisation: none\n")

    result = CliRunner().invoke(
        cli, ["import-checkpoint", str(seam_file), "-o", str(tmp_path / "s.pt"), "--config", str(config)]
    )

    assert result.exit_code == 0, result.output
    assert "variant seam, background + 4 classes (TE, NEC, LYM, TAS), input normalisation none" in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], r"Error: classes: name the checkpoint's classes in fc8 order, e\.g\. --classes luad"),
        (["--classes", "a,b,c"], r"Error: .*stage1_checkpoint_trained_on_luad\.pth: has an fc8 with 4 outputs"),
        (["--classes", "luad", "--variant", "seam"], r"Error: .*: has no PCM layers \(f8_3, f8_4, f9\)"),
    ],
)
def test_errors_are_one_line_without_traceback(tmp_path: Path, mlps_file: Path, extra: list[str], message: str) -> None:
    output = tmp_path / "out.pt"

    result = CliRunner().invoke(cli, ["import-checkpoint", str(mlps_file), "-o", str(output), *extra])

    assert result.exit_code == 1
    assert re.search(message, result.output), result.output
    assert "Traceback" not in result.output
    assert not output.exists()


def test_missing_source(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["import-checkpoint", str(tmp_path / "nothere.pth"), "-o", str(tmp_path / "o.pt"), "--classes", "luad"]
    )

    assert result.exit_code == 1
    assert "nothere.pth: does not exist" in result.output
    assert "Traceback" not in result.output


def test_an_existing_output_needs_overwrite(tmp_path: Path, mlps_file: Path) -> None:
    output = tmp_path / "o.pt"
    output.write_bytes(b"keep me")
    args = ["import-checkpoint", str(mlps_file), "-o", str(output), "--classes", "luad"]

    refused = CliRunner().invoke(cli, args)
    replaced = CliRunner().invoke(cli, [*args, "--overwrite"])

    assert refused.exit_code == 1
    assert "o.pt: already exists. Pass --overwrite" in refused.output
    assert replaced.exit_code == 0, replaced.output
    assert load_model(output).classes == ("TE", "NEC", "LYM", "TAS")


def test_help_teaches_with_an_example() -> None:
    result = CliRunner().invoke(cli, ["import-checkpoint", "--help"])

    assert result.exit_code == 0
    assert "histo-daen import-checkpoint stage1_checkpoint_trained_on_luad.pth -o mlps_luad.pt --classes luad" in (
        result.output
    )
