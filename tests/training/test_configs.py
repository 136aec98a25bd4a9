"""The training configs shipped in configs/ load strictly and pass the run's consistency checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from histo_daen.config.load import load_config
from histo_daen.config.schema import TrainConfig
from histo_daen.errors import DatasetError
from histo_daen.training.loop import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRAINING = ("luad_daen", "luad_seam", "luad_cm", "luad_sm", "luad_cam", "luad_daen_reference", "luad_seam_reference")


@pytest.mark.parametrize("name", [*TRAINING, "demo"])
def test_shipped_config_passes_the_checks_that_run_before_training(name: str, tmp_path: Path) -> None:
    cfg = load_config(TrainConfig, CONFIGS / f"{name}.yaml", overrides={"data": {"root": tmp_path / "absent"}})
    # Settings are checked first (batch split, classes, resolution); the missing dataset is the first error left.
    with pytest.raises(DatasetError, match=r"absent: is not a folder"):
        train(cfg, output_dir=tmp_path / "run", device="cpu")


def test_paper_configs_name_their_variant_and_keep_the_reference_recipe() -> None:
    for name in TRAINING:
        cfg = load_config(TrainConfig, CONFIGS / f"{name}.yaml")
        assert cfg.model.variant == name.split("_")[1]
        assert (cfg.model.backbone, cfg.optim.lr, cfg.optim.batch_size, cfg.optim.epochs) == ("resnet38", 0.01, 8, 8)


def test_reference_geometry_configs_use_seams_rescale_on_448_inputs() -> None:
    cfg = load_config(TrainConfig, CONFIGS / "luad_daen_reference.yaml")
    assert (cfg.twin.scale, cfg.data.input_scale, cfg.model.input_size, cfg.model.input_mpp) == (0.3, 2.0, 448, 0.5)
