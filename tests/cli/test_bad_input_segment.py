"""``histo-daen segment``: its whole bad-input contract (checkpoints, numbers, reader threads).

Corrupt, blank and resolution-less slides in a cohort are in ``test_segment.py``. Each case here: the input, the one
line the user sees, the exit code, and what is on disk afterwards.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from histo_daen.config.schema import ModelConfig
from histo_daen.data.synthetic_slide import SyntheticSlide
from histo_daen.models import build_model, checkpoint_state


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diverged run's checkpoint, as an older histo-daen wrote it: NaN in every weight."""
    model = build_model(ModelConfig(variant="daen", backbone="resnet18", width=0.25, input_size=64, input_mpp=2.0))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    path = tmp_path_factory.mktemp("segment_nan") / "last.pt"
    torch.save({**checkpoint_state(model), "format_version": 1, "histo_daen_version": "0"}, path)
    return path


def test_a_checkpoint_with_nan_weights_is_refused_before_any_slide(
    invoke: Callable[..., Any], nan_checkpoint: Path, tiny_slide: SyntheticSlide, tmp_path: Path
) -> None:
    outcome = invoke("segment", tiny_slide.path, "--checkpoint", nan_checkpoint, "-o", tmp_path / "maps")
    assert outcome.code == 1
    assert outcome.error.startswith(f"Error: {nan_checkpoint}: holds weights with NaN or inf (")
    assert "the run that wrote it diverged" in outcome.error
    assert not (tmp_path / "maps").exists()  # no folder, no map.zarr.partial, no summary


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("inference.scales=[nan]", "inference: scales must be a finite number, got nan"),
        (
            "inference.scales=[1000.0]",
            "inference: scales must be a non-empty list of factors in [0.1, 4], got [1000.0]",
        ),
        ("geojson_simplify=nan", "geojson_simplify must be a finite number, got nan"),
        ("tissue_mpp=0", "tissue_mpp must be in [0.01, 1000] um/px, got 0"),
        ("chunk_size=10000000", "chunk_size must be in [16, 16384] pixels, got 10000000"),
    ],
)
def test_numbers_that_are_not_finite_or_absurd_are_refused_before_any_slide(
    invoke: Callable[..., Any],
    segment_checkpoint: Path,
    tiny_slide: SyntheticSlide,
    tmp_path: Path,
    override: str,
    message: str,
) -> None:
    outcome = invoke("segment", tiny_slide.path, "--checkpoint", segment_checkpoint, "-o", tmp_path / "maps", override)
    assert outcome.code == 1
    assert outcome.error.startswith("Error: ") and outcome.error.endswith(f": {message}")
    assert not (tmp_path / "maps").exists()


@pytest.mark.parametrize("case", ["under_a_file", "unwritable", "a_file"])
def test_an_output_folder_that_cannot_be_used_is_one_error_and_changes_nothing(
    invoke: Callable[..., Any],
    bad_output: Callable[..., Any],
    disk_state: Callable[..., Any],
    segment_checkpoint: Path,
    tiny_slide: SyntheticSlide,
    tmp_path: Path,
    case: str,
) -> None:
    bad = bad_output(case, "maps")
    before = disk_state(tmp_path)
    outcome = invoke("segment", tiny_slide.path, "--checkpoint", segment_checkpoint, "-o", bad.path)
    assert outcome.code == 1 and bad.words in outcome.error
    assert disk_state(tmp_path) == before


def test_a_nan_slide_resolution_is_refused(
    invoke: Callable[..., Any], segment_checkpoint: Path, tiny_slide: SyntheticSlide, tmp_path: Path
) -> None:
    outcome = invoke(
        "segment", tiny_slide.path, "--checkpoint", segment_checkpoint, "-o", tmp_path / "maps", "--slide-mpp", "nan"
    )
    assert outcome.code == 1
    assert outcome.error == "Error: options: slide_mpp must be a finite number, got nan"
    assert not (tmp_path / "maps").exists()


def test_more_reader_threads_than_the_machine_can_run_are_refused(
    invoke: Callable[..., Any], segment_checkpoint: Path, tiny_slide: SyntheticSlide, tmp_path: Path
) -> None:
    outcome = invoke(
        "segment", tiny_slide.path, "--checkpoint", segment_checkpoint, "-o", tmp_path / "maps", "--workers", "100000"
    )
    assert outcome.code == 1
    assert outcome.error.startswith(
        "Error: --workers (workers): 100000 worker threads are more than this machine can run ("
    )
    assert not (tmp_path / "maps").exists()


def test_a_slide_that_raises_anything_fails_alone_and_a_rerun_retries_it(
    invoke: Callable[..., Any],
    segment_checkpoint: Path,
    tiny_slide: SyntheticSlide,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in one slide's last step (after its map is finished, before its summary): the others finish."""
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("a.svs", "b.svs"):
        shutil.copy(tiny_slide.path, slides / name)
    from histo_daen.jobs import segment as segment_job

    real_overview = segment_job.write_overview

    def broken_for_b(thumbnail: Any, tissue_map: Any, path: Path, **kwargs: Any) -> Path:
        if path.parent.name == "b":
            raise ValueError("Out of range float values are not JSON compliant")
        return real_overview(thumbnail, tissue_map, path, **kwargs)

    monkeypatch.setattr(segment_job, "write_overview", broken_for_b)
    args = ("segment", slides, "--checkpoint", segment_checkpoint, "-o", tmp_path / "maps", "--workers", "0")
    outcome = invoke(*args)
    assert outcome.code == 3
    assert outcome.error == (
        f"Error: {slides / 'b.svs'}: unexpected ValueError (Out of range float values are not JSON compliant); the "
        "other slides went on. This is a bug in histo-daen: please report it with the traceback that -vv prints"
    )
    assert (tmp_path / "maps" / "a" / "summary.json").is_file()
    assert (tmp_path / "maps" / "b" / "failed.json").is_file() and not (
        tmp_path / "maps" / "b" / "summary.json"
    ).exists()
    assert "2 slide(s): 1 ok, 1 failed." in outcome.stdout

    monkeypatch.setattr(segment_job, "write_overview", real_overview)
    rerun = invoke(*args)
    assert rerun.code == 0, rerun.stderr
    assert "a.svs: already done" in rerun.stdout and "b.svs: done" in rerun.stdout
    assert (tmp_path / "maps" / "b" / "summary.json").is_file() and not (
        tmp_path / "maps" / "b" / "failed.json"
    ).exists()
