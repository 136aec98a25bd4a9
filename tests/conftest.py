"""Shared fixtures. Package-specific fixtures live in tests/<package>/conftest.py beside their tests."""

from __future__ import annotations

import random

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same global RNG state (tests must not depend on order)."""
    random.seed(0)
    np.random.seed(0)
