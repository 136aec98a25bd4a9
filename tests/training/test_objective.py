from __future__ import annotations

import pytest
import torch

from histo_daen.config.schema import LossConfig, TwinConfig
from histo_daen.models.cam_net import CamNetOutput
from histo_daen.training.affine import TwinParams, TwinTransform
from histo_daen.training.objective import cam_coverage, seam_objective


def _output(cams: torch.Tensor, refined: torch.Tensor) -> CamNetOutput:
    return CamNetOutput(
        logits=cams.mean(dim=(2, 3)), cams=cams, cams_refined=refined[:, 1:], background_refined=refined[:, :1]
    )


def test_equivariant_network_has_zero_equivariant_loss_and_a_rotated_copy_does_not() -> None:
    torch.manual_seed(0)
    twin = TwinTransform(TwinConfig(scale=1.0, rotations=True))
    params = TwinParams(mirrors=(False, False), quarter_turns=(1, 3))
    cams = torch.rand(2, 4, 8, 8)
    refined = torch.rand(2, 5, 8, 8)
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 1]])
    first = _output(cams, refined)
    turned = _output(twin.apply(cams, params), twin.apply(refined, params))  # what an equivariant net gives on A(x)
    terms = seam_objective(first, turned, labels, image_hw=(64, 64), twin=twin, params=params, cfg=LossConfig())
    assert terms.terms["equivariant"].item() == pytest.approx(0.0, abs=1e-6)
    unturned = seam_objective(first, first, labels, image_hw=(64, 64), twin=twin, params=params, cfg=LossConfig())
    assert unturned.terms["equivariant"].item() > 0.05


def test_total_is_the_weighted_sum_of_the_terms() -> None:
    torch.manual_seed(1)
    twin = TwinTransform(TwinConfig(scale=0.5))
    first = _output(torch.randn(2, 4, 8, 8), torch.rand(2, 5, 8, 8))
    second = _output(torch.randn(2, 4, 4, 4), torch.rand(2, 5, 4, 4))
    labels = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    cfg = LossConfig(classification_weight=2.0, equivariant_weight=0.5, cross_equivariant_weight=3.0, rvmin_weight=0.25)
    terms = seam_objective(first, second, labels, image_hw=(64, 64), twin=twin, params=TwinParams.identity(2), cfg=cfg)
    t = {k: v.item() for k, v in terms.terms.items()}
    expected = 2 * t["classification"] + 0.5 * t["equivariant"] + 3 * t["cross_equivariant"] + 0.25 * t["rvmin"]
    assert terms.total.item() == pytest.approx(expected, rel=1e-6)


def test_switched_off_terms_are_not_computed() -> None:
    twin = TwinTransform(TwinConfig(scale=0.5))
    first = _output(torch.randn(1, 4, 8, 8), torch.rand(1, 5, 8, 8))
    second = _output(torch.randn(1, 4, 4, 4), torch.rand(1, 5, 4, 4))
    cfg = LossConfig(cross_equivariant_weight=0.0, rvmin_weight=0.0)
    terms = seam_objective(
        first, second, torch.ones(1, 4), image_hw=(64, 64), twin=twin, params=TwinParams.identity(1), cfg=cfg
    )
    assert set(terms.terms) == {"classification", "equivariant", "cam_coverage"}  # coverage: logged, not optimised


def test_seam_objective_needs_pcm_outputs() -> None:
    plain = CamNetOutput(logits=torch.zeros(1, 4), cams=torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="needs a network with a PCM"):
        seam_objective(
            plain,
            plain,
            torch.ones(1, 4),
            image_hw=(64, 64),
            twin=TwinTransform(TwinConfig()),
            params=TwinParams.identity(1),
            cfg=LossConfig(),
        )


def test_cam_coverage_counts_lit_pixels_of_present_classes_only() -> None:
    cams = torch.zeros(1, 2, 2, 2)
    cams[0, 0] = torch.tensor([[1.0, 0.5], [0.1, 0.0]])  # present: 2 of 4 pixels above 0.2
    cams[0, 1] = 1.0  # absent class, ignored
    assert cam_coverage(cams, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.5)


def test_cam_coverage_of_a_single_peak_is_tiny_and_of_no_class_is_zero() -> None:
    peak = torch.zeros(1, 1, 10, 10)
    peak[0, 0, 4, 4] = 1.0
    assert cam_coverage(peak, torch.ones(1, 1)).item() == pytest.approx(0.01)
    assert cam_coverage(peak, torch.zeros(1, 1)).item() == 0.0
