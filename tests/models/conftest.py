"""Fixtures for the model tests: a reusable invariant check (torchvision's ``check_kernel`` idea) and tiny inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn


def _tensors(output: Any) -> dict[str, torch.Tensor | None]:
    """Named tensors of a module output: a NamedTuple's fields, or the tensor itself as 'output'."""
    if isinstance(output, torch.Tensor):
        return {"output": output}
    if hasattr(output, "_asdict"):
        return dict(output._asdict())
    raise TypeError(f"cannot check an output of type {type(output).__name__}")


def check_module(module: nn.Module, x: torch.Tensor, *, atol: float = 1e-5) -> dict[str, torch.Tensor | None]:
    """Assert the invariants every network here keeps, in eval mode; returns the named outputs for ``x``.

    - each output tensor has the batch size of ``x``, its device, a floating dtype, and finite values;
    - ``x`` is not modified;
    - two calls give identical outputs (eval mode is deterministic);
    - a batch equals the concatenation of its items run one by one (no cross-sample leakage, BN frozen).
    """
    assert x.shape[0] >= 2, "check_module needs a batch of at least 2"
    module.eval()
    before = x.clone()
    with torch.no_grad():
        first = _tensors(module(x))
        second = _tensors(module(x))
        singles = [_tensors(module(x[i : i + 1])) for i in range(x.shape[0])]
    assert torch.equal(x, before), "the module modified its input"
    for name, value in first.items():
        if value is None:
            assert second[name] is None
            continue
        assert value.shape[0] == x.shape[0], f"{name}: batch {value.shape[0]} != {x.shape[0]}"
        assert value.device == x.device, f"{name} on {value.device}"
        assert value.dtype.is_floating_point, f"{name} has dtype {value.dtype}"
        assert torch.isfinite(value).all(), f"{name} has non-finite values"
        assert torch.equal(value, second[name]), f"{name} differs between two eval calls"
        stacked = torch.cat([single[name] for single in singles], dim=0)
        torch.testing.assert_close(value, stacked, atol=atol, rtol=1e-4, msg=f"{name}: batch != items one by one")
    return first


@pytest.fixture
def module_checker() -> Callable[..., dict[str, torch.Tensor | None]]:
    """The :func:`check_module` helper, for tests in this folder."""
    return check_module


@pytest.fixture
def images_64() -> torch.Tensor:
    """(2, 3, 64, 64) float32 RGB in [0, 1], seeded."""
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Random initialisation and dropout masks are the same in every run of a test."""
    torch.manual_seed(0)
