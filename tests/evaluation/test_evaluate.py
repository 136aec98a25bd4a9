"""The evaluate job: a colour-lookup oracle scores 1.0, the files and record are complete, bad input is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from histo_daen.classes import LUAD
from histo_daen.config.schema import DataConfig, EvaluateConfig, InferenceConfig, ModelConfig
from histo_daen.data.registry import load_splits
from histo_daen.errors import CheckpointError, DatasetError, OutputExistsError
from histo_daen.evaluation.evaluate import evaluate, evaluate_model
from histo_daen.evaluation.metrics import confusion_matrix, scores
from histo_daen.models.cam_net import CamNetOutput, ModelAbilities
from histo_daen.models.checkpoint import LoadedModel

from .conftest import CLASS_RGB

FAST = EvaluateConfig(batch_size=3, inference=InferenceConfig(scales=(1.0,), flip=False))


class ColourLookup(nn.Module):
    """An oracle 'network': the CAM of class c is high where the pixel has class c's colour (full resolution)."""

    abilities = ModelAbilities(pcm=False)  # raw CAMs only, like the cam variant

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("colours", torch.tensor(CLASS_RGB, dtype=torch.float32)[:, :, None, None] / 255)

    def forward(self, x: torch.Tensor) -> CamNetOutput:
        distance = (x[:, None] - self.colours[None]).abs().sum(dim=2)  # (B, K, H, W)
        cams = 1.0 - distance
        present = (distance < 0.05).float().amax(dim=(2, 3))  # (B, K) 1 if the colour occurs
        return CamNetOutput(logits=8 * present - 4, cams=cams)


def _loaded(model: nn.Module) -> LoadedModel:
    config = ModelConfig(variant="cam")
    return LoadedModel(model=model, model_config=config, config={}, classes=LUAD.codes, state={})


def test_oracle_model_scores_one_and_ignores_glass(tiny_luad: Path) -> None:
    records = load_splits(DataConfig(root=tiny_luad), ("test",))["test"]
    matrix, label_stats = evaluate_model(
        _loaded(ColourLookup()), records, FAST, classes=LUAD, device=torch.device("cpu")
    )
    result = scores(matrix)
    assert result.iou == (1.0, 1.0, 1.0, 1.0)
    assert result.miou == 1.0
    # 4 patches of 32 x 32, minus 8 + 4 glass rows of 32 px: only tissue is scored.
    assert result.n_pixels == 4 * 32 * 32 - 12 * 32
    assert label_stats["fraction_matching"] == 1.0


def test_labels_from_the_masks_keep_the_oracle_perfect(tiny_luad: Path) -> None:
    records = load_splits(DataConfig(root=tiny_luad), ("test",))["test"]
    cfg = EvaluateConfig(inference=InferenceConfig(scales=(1.0,), flip=False, label_source="masks"))
    matrix, _ = evaluate_model(_loaded(ColourLookup()), records, cfg, classes=LUAD, device=torch.device("cpu"))
    assert scores(matrix).miou == 1.0


@pytest.mark.slow
def test_evaluate_writes_metrics_masks_and_pictures(tiny_luad: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    cfg = EvaluateConfig(batch_size=3, save_masks=True, n_examples=2)
    result = evaluate(tiny_checkpoint, tiny_luad, tmp_path / "eval", cfg)
    out = tmp_path / "eval"
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "confusion_matrix.png",
        "examples",
        "masks",
        "metrics.json",
    ]
    assert len(list((out / "examples").glob("*.png"))) == 2
    record = json.loads((out / "metrics.json").read_text())
    assert record["method"] == "cam"
    assert record["checkpoint"]["variant"] == "cam" and record["checkpoint"]["step"] == 3
    assert record["checkpoint"]["model_config"]["width"] == 0.125
    assert record["protocol"]["name"] == "mlps" and record["protocol"]["label_source"] == "predicted"
    assert record["protocol"]["cams_used"] == "raw"  # the cam variant has no PCM, whatever cam_source asks
    assert record["protocol"]["scales"] == [0.5, 1.0, 1.5, 2.0] and record["protocol"]["flip"] is True
    assert record["protocol"]["label_views"] == "x1" and record["protocol"]["white_exclude"] is False
    steps = record["protocol"]["steps"]
    assert "on the x1 view" in steps["image_labels"] and steps["cams"].startswith("raw CAMs (fc8) summed over 8")
    assert steps["label_map"].endswith("nothing is labelled exclude") and "confusion matrix" in steps["scoring"]
    assert record["dataset"]["split"] == "test" and record["dataset"]["n_images"] == 4
    assert yaml.safe_load((out / "config.yaml").read_text())["batch_size"] == 3
    # Oracle: the saved masks scored against the dataset's masks give exactly the recorded matrix.
    matrix = np.zeros((5, 5), dtype=np.int64)
    for mask_path in sorted((out / "masks").glob("*.png")):
        with Image.open(mask_path) as predicted, Image.open(tiny_luad / "test" / "mask" / mask_path.name) as truth:
            assert predicted.mode == "P"
            matrix += confusion_matrix(np.asarray(truth), np.asarray(predicted))
    np.testing.assert_array_equal(matrix, np.array(record["confusion_matrix"]))
    assert record["scores"]["miou"] == pytest.approx(result.scores.miou)


def test_evaluate_refuses_an_existing_output_before_loading_anything(tiny_luad: Path, tmp_path: Path) -> None:
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text("{}")
    with pytest.raises(OutputExistsError, match=r"eval: exists and is not empty\. Pass --overwrite"):
        evaluate(tmp_path / "missing.pt", tiny_luad, tmp_path / "eval", FAST)


def test_evaluate_refuses_a_checkpoint_that_is_not_ours(tiny_luad: Path, tmp_path: Path) -> None:
    bare = tmp_path / "weights.pt"
    torch.save({"conv1.weight": torch.zeros(2, 2)}, bare)
    with pytest.raises(CheckpointError, match=r"weights\.pt: holds a bare state dict"):
        evaluate(bare, tiny_luad, tmp_path / "eval", FAST)
    assert not (tmp_path / "eval").exists()


def test_evaluate_refuses_a_split_without_masks(tiny_luad: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    for mask in (tiny_luad / "val" / "mask").iterdir():
        mask.unlink()
    cfg = EvaluateConfig(split="val", inference=FAST.inference)
    with pytest.raises(DatasetError, match=r"4 images without a mask: val/img/p1-0-0\.png"):
        evaluate(tiny_checkpoint, tiny_luad, tmp_path / "eval", cfg)
    assert not (tmp_path / "eval").exists()


def test_dataset_labels_need_labelled_names(tiny_luad: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    cfg = EvaluateConfig(inference=InferenceConfig(scales=(1.0,), flip=False, label_source="dataset"))
    with pytest.raises(DatasetError, match=r"p1-0-0\.png: has no patch label .* --label-source predicted"):
        evaluate(tiny_checkpoint, tiny_luad, tmp_path / "eval", cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LUAD"]  # nothing half-written left behind


CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_shipped_mlps_config_is_the_mlps_protocol() -> None:
    from histo_daen.config import load_config

    settings = load_config(EvaluateConfig, CONFIGS / "evaluate_mlps.yaml").inference
    assert (settings.cam_source, settings.scales, settings.flip) == ("raw", (1.0,), False)
    assert (settings.normalisation, settings.label_source, settings.label_threshold) == ("global", "predicted", 0.25)
    assert settings.label_views == "x1"
    assert not settings.white_exclude and settings.background_alpha is None  # argmax over the 4 classes
    assert load_config(EvaluateConfig, CONFIGS / "evaluate_voc_alpha.yaml").inference.background_alpha == 0.26
