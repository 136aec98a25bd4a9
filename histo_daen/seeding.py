"""One seeding entry point per command, worker seeding for data loaders, and RNG state for checkpoints."""

from __future__ import annotations

import random
from typing import Any, cast

import numpy as np

__all__ = ["get_rng_state", "seed_everything", "set_rng_state", "worker_seed"]


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed Python, NumPy and torch (if imported) with ``seed + rank``; returns the seed used.

    The rank offset makes augmentations differ between DDP processes, while a ``DistributedSampler(seed=seed)``
    still shards the data identically on every rank.
    """
    effective = int(seed) + int(rank)
    random.seed(effective)
    np.random.seed(effective % 2**32)  # legacy global RNG, for third-party code that still uses it
    try:
        import torch
    except ImportError:  # slide/tiling users need not have torch
        return effective
    torch.manual_seed(effective)
    return effective


def worker_seed(base_seed: int, worker_id: int) -> int:
    """A distinct, reproducible 32-bit seed for data-loader worker ``worker_id``."""
    return (int(base_seed) * 1_000_003 + int(worker_id)) % 2**32


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch CPU/CUDA RNG states, as tensors and plain types (``weights_only`` loadable)."""
    import torch

    py_state = random.getstate()
    # numpy's stubs type the no-argument call as the dict form, but legacy=True is the default: the global
    # MT19937 RandomState gives ("MT19937", keys, pos, has_gauss, cached_gaussian).
    np_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state: dict[str, Any] = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].copy()),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
