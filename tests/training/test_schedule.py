from __future__ import annotations

import pytest
import torch
from torch import nn

from histo_daen.config.schema import OptimConfig
from histo_daen.training.schedule import PolyFactor, build_optimizer, build_schedule, parameter_groups_for_sgd


def test_poly_factor_follows_the_reference_formula() -> None:
    poly = PolyFactor(max_steps=10, power=0.9)
    assert poly(0) == 1.0
    assert poly(5) == pytest.approx(0.5**0.9)
    assert poly(10) == 0.0 and poly(12) == 0.0


def _groups() -> dict[str, list[nn.Parameter]]:
    backbone, head = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1, bias=False)
    frozen = nn.Parameter(torch.ones(3), requires_grad=False)
    return {"backbone": [backbone.weight, backbone.bias, frozen], "new": [head.weight]}


def test_parameter_groups_follow_seam_learning_rates_and_decay() -> None:
    cfg = OptimConfig(lr=0.01, weight_decay=5e-4)
    groups = {g["name"]: g for g in parameter_groups_for_sgd(_groups(), cfg)}
    assert set(groups) == {"backbone_weights", "backbone_biases", "new_weights"}  # empty and frozen ones dropped
    assert groups["backbone_weights"]["lr"] == 0.01 and groups["backbone_weights"]["weight_decay"] == 5e-4
    assert groups["backbone_biases"]["lr"] == 0.02 and groups["backbone_biases"]["weight_decay"] == 0.0
    assert groups["new_weights"]["lr"] == pytest.approx(0.1)
    assert len(groups["backbone_biases"]["params"]) == 1  # the frozen tensor is not optimised


def test_schedule_decays_every_group_from_its_own_rate() -> None:
    optimizer = build_optimizer(_groups(), OptimConfig(lr=0.01, momentum=0.9))
    assert optimizer.defaults["momentum"] == 0.9
    schedule = build_schedule(optimizer, max_steps=4, power=1.0)
    for _ in range(2):
        optimizer.step()
        schedule.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.005, 0.01, 0.05])
