"""Training on a CUDA device (marker ``gpu``; skipped without one): bf16 autocast, CPU-loadable checkpoints, torchrun
with NCCL. CPU runs of the same configs are the reference."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from histo_daen.config.load import dump_config
from histo_daen.config.schema import TrainConfig
from histo_daen.models.checkpoint import load_model, read_checkpoint
from histo_daen.training.loop import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

RUNNER = Path(__file__).with_name("run_training.py")


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("variant", ["daen", "seam", "cam"])
def test_cuda_training_follows_the_cpu_run_within_bf16_rounding(
    variant: str, tiny_config: Callable[..., TrainConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dropout masks come from each device's own generator and cannot match: both runs go without dropout.
    monkeypatch.setattr(torch.nn.Dropout, "forward", lambda self, x: x)
    monkeypatch.setattr(torch.nn.Dropout2d, "forward", lambda self, x: x)
    cfg = tiny_config(f"model.variant={variant}", "optim.epochs=2")
    train(cfg, output_dir=tmp_path / "cpu", device="cpu")
    train(cfg, output_dir=tmp_path / "cuda", device="cuda")
    cpu, cuda = _losses(tmp_path / "cpu"), _losses(tmp_path / "cuda")
    assert all(torch.isfinite(torch.tensor(cuda)))
    assert cuda != cpu  # bf16 autocast is on for CUDA: rounding shows in the losses
    assert cuda == pytest.approx(cpu, rel=0.05)  # and only rounding: the same training
    loaded = load_model(tmp_path / "cuda" / "last.pt", device="cpu")  # a GPU run's checkpoint serves a CPU user
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in loaded.model.state_dict().values())


def test_torchrun_on_one_gpu_trains_with_nccl(tiny_config: Callable[..., TrainConfig], tmp_path: Path) -> None:
    config_file = dump_config(tiny_config(), tmp_path / "config.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(RUNNER),
         str(config_file), str(tmp_path / "run"), "--device", "cuda"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    state = read_checkpoint(tmp_path / "run" / "last.pt")
    assert state["world_size"] == 1 and state["step"] == 2
