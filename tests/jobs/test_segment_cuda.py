"""``segment_cohort`` on a CUDA device (marker ``gpu``; skipped without one): the map a CPU run makes, within bf16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from histo_daen.config.schema import SegmentConfig
from histo_daen.data.synthetic_slide import SyntheticSlide
from histo_daen.export.zarr_map import read_tissue_map
from histo_daen.jobs.segment import segment_cohort

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CONFIG = SegmentConfig(batch_size=8, workers=1, chunk_size=16, pyramid_levels=2, overview_max_side=256)


def test_a_cuda_map_equals_the_cpu_map_within_bf16_rounding(
    tiny_tiff_slide: SyntheticSlide, segment_checkpoint: Path, tmp_path: Path, check_ome_zarr
) -> None:
    maps = {}
    for device in ("cpu", "cuda"):
        report = segment_cohort(
            [tiny_tiff_slide.path], tmp_path / device, checkpoint=segment_checkpoint, config=CONFIG, device=device
        )
        (outcome,) = report.outcomes
        assert outcome.status == "done", outcome
        check_ome_zarr(outcome.folder / "map.zarr")
        maps[device] = read_tissue_map(outcome.folder / "map.zarr")
    cpu, cuda = (maps[d].scores(0)[:].astype(np.float32) for d in ("cpu", "cuda"))
    labels_cpu, labels_cuda = maps["cpu"].labels(0)[:], maps["cuda"].labels(0)[:]
    tissue = labels_cpu > 0
    difference = np.abs(cuda - cpu)[:, tissue]
    agreement = float((labels_cpu[tissue] == labels_cuda[tissue]).mean())
    print(
        f"CPU/CUDA: score difference median {np.median(difference):.4f}, 99th percentile "
        f"{np.percentile(difference, 99):.4f}, max {difference.max():.4f}; label agreement {agreement:.4f}"
    )
    assert np.isfinite(cuda).all()
    assert np.array_equal(labels_cpu > 0, labels_cuda > 0)  # the tissue mask does not depend on the device
    # bf16 autocast on the GPU, float32 on the CPU: rounding of the CAMs, amplified where an untrained model's
    # per-tile CAM range is small; most scores agree to a few thousandths.
    assert np.median(difference) < 0.01 and np.percentile(difference, 99) < 0.1
    assert agreement > 0.95  # near-ties of the untrained model may flip, a few at most
