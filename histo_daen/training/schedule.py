"""SGD with SEAM's four learning-rate groups and the poly schedule (reference.md §3.4).

Groups (empty ones are dropped): backbone weights x1 with weight decay, backbone biases x2 without, new layers'
weights x``new_layer_lr_multiplier`` (10) with weight decay, new biases x2 that without. Before step s every group
runs at ``lr0_g * (1 - s / max_steps) ** power``. The reference's accidental momentum (5e-4, from passing weight
decay positionally to SGD) is the ``reference`` recipe's; the ``scratch`` recipe uses 0.9 (``training/recipe.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from histo_daen.config.schema import OptimConfig

__all__ = ["PolyFactor", "build_optimizer", "build_schedule", "parameter_groups_for_sgd"]


class PolyFactor:
    """``(1 - step / max_steps) ** power``, 0 from ``max_steps`` on; a class so LambdaLR can save its state."""

    def __init__(self, max_steps: int, power: float) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        self.max_steps = max_steps
        self.power = power

    def __call__(self, step: int) -> float:
        return max(0.0, 1.0 - min(step, self.max_steps) / self.max_steps) ** self.power


def parameter_groups_for_sgd(groups: Mapping[str, Sequence[nn.Parameter]], cfg: OptimConfig) -> list[dict[str, Any]]:
    """The model's ``{"backbone": [...], "new": [...]}`` -> SGD parameter groups with SEAM's LR and decay rules.

    A parameter with more than one dimension is a weight; the rest (biases, norms) are biases: twice the group's
    learning rate and no weight decay, as SEAM does.
    """
    unknown = set(groups) - {"backbone", "new"}
    if unknown:
        raise ValueError(f"unknown parameter groups {sorted(unknown)}; expected 'backbone' and 'new'")
    multipliers = {"backbone": 1.0, "new": cfg.new_layer_lr_multiplier}
    out = []
    for name in ("backbone", "new"):
        params = [p for p in groups.get(name, []) if p.requires_grad]
        weights = [p for p in params if p.ndim > 1]
        biases = [p for p in params if p.ndim <= 1]
        lr = cfg.lr * multipliers[name]
        if weights:
            out.append({"params": weights, "lr": lr, "weight_decay": cfg.weight_decay, "name": f"{name}_weights"})
        if biases:
            out.append({"params": biases, "lr": 2 * lr, "weight_decay": 0.0, "name": f"{name}_biases"})
    if not out:
        raise ValueError("the model has no trainable parameters")
    return out


def build_optimizer(groups: Mapping[str, Sequence[nn.Parameter]], cfg: OptimConfig) -> torch.optim.SGD:
    """SGD over :func:`parameter_groups_for_sgd` with the config's momentum (null: the reference's 5e-4; training
    decides it by its start first, ``histo_daen.training.recipe``)."""
    momentum = 5e-4 if cfg.momentum is None else cfg.momentum
    return torch.optim.SGD(parameter_groups_for_sgd(groups, cfg), lr=cfg.lr, momentum=momentum)


def build_schedule(
    optimizer: torch.optim.Optimizer, *, max_steps: int, power: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Poly decay of every group from its own initial learning rate; call ``.step()`` after each optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=PolyFactor(max_steps, power))
