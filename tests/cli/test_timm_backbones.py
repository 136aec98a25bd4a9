"""``histo-daen train --backbone timm:<name> --pretrained FILE`` then ``segment``, with timm's tiny test models: a CNN
from a safetensors file and a ViT from a .pth file, as a user would start from a foundation model on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from histo_daen.cli import cli

from histo_daen.data.synthetic_dataset import write_synthetic_luad
from histo_daen.data.synthetic_slide import SyntheticSlide


@pytest.fixture(scope="module")
def patches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("timm_luad") / "LUAD-synth"
    return write_synthetic_luad(root, n_train=8, n_val=2, n_test=2, seed=5, patch_size=64, workers=1).root


@pytest.mark.slow
@pytest.mark.parametrize(("name", "suffix"), [("test_resnet", ".safetensors"), ("test_vit", ".pth")])
def test_train_from_local_timm_weights_then_segment(
    name: str,
    suffix: str,
    patches: Path,
    tiny_tiff_slide: SyntheticSlide,
    tmp_path: Path,
    check_qupath_geojson,
    check_ome_zarr,
) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in timm.create_model(name, pretrained=False).state_dict().items()}
    weights = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        save_file(state, weights)
    else:
        torch.save(state, weights)
    run = tmp_path / "run"
    trained = CliRunner().invoke(
        cli,
        [
            *("train", "--data-root", str(patches), "-o", str(run), "--variant", "daen", "--backbone", f"timm:{name}"),
            *("--pretrained", str(weights), "--max-steps", "2", "--batch-size", "2", "--workers", "0"),
            *("model.input_size=64", "augment.colour=none"),
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert "Trained 2/2 steps" in trained.output
    checkpoint = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert checkpoint["model_config"]["backbone"] == f"timm:{name}"
    out = tmp_path / "maps"
    segmented = CliRunner().invoke(
        cli,
        [
            *("segment", str(tiny_tiff_slide.path), "--checkpoint", str(run / "last.pt"), "-o", str(out)),
            *("--workers", "0", "chunk_size=16", "pyramid_levels=2", "overview_max_side=256"),
        ],
    )
    assert segmented.exit_code == 0, segmented.output
    check_ome_zarr(out / "tiny" / "map.zarr")
    check_qupath_geojson(out / "tiny" / "map.geojson", region=(0, 0, 1024, 768))


def test_an_unknown_timm_model_is_one_error_line(patches: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["train", "--data-root", str(patches), "-o", str(tmp_path / "run"), "--backbone", "timm:resnet5O"]
    )
    assert result.exit_code == 1 and "Error: model.backbone: timm has no model 'resnet5O'" in result.output
    assert "Traceback" not in result.output
    bad = CliRunner().invoke(cli, ["train", "--data-root", str(patches), "-o", str(tmp_path), "--backbone", "vit"])
    assert bad.exit_code == 2 and "nor timm:<name>" in bad.output
