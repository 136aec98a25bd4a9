"""The transform A of SEAM's equivariant twin branch, and its inverse (reference.md §3.2).

SEAM's A is a fixed bilinear rescale (x0.3, ``align_corners=True``) of the normalised crop; the second branch
sees ``A(x)`` and its CAMs are compared with ``A(CAM(x))``. Here A is: rescale by ``scale`` to
``floor(H * scale) x floor(W * scale)`` (SEAM's rounding), then optionally mirror left-right and turn by a multiple
of 90 degrees, drawn per patch. The same A maps images and CAMs (any channel count), so an equivariant network
satisfies ``CAM(A(x)) == A(CAM(x))``.

Random choices are keyed by (seed, epoch, patch index), like the data augmentation, so a patch gets the same twin
transform on any number of processes and after a resume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from histo_daen.config.schema import TwinConfig

__all__ = ["TwinParams", "TwinTransform"]

_TWIN_STREAM = 1  # keeps the twin's keyed generator apart from the data augmentation's (same seed, epoch, index)


@dataclass(frozen=True)
class TwinParams:
    """Per-patch choices of A for a batch: mirror first, then counter-clockwise quarter turns."""

    mirrors: tuple[bool, ...]
    quarter_turns: tuple[int, ...]

    @classmethod
    def identity(cls, batch: int) -> TwinParams:
        return cls(mirrors=(False,) * batch, quarter_turns=(0,) * batch)

    @property
    def is_identity(self) -> bool:
        return not any(self.mirrors) and not any(self.quarter_turns)


def _dihedral(x: torch.Tensor, *, mirror: bool, quarter_turns: int) -> torch.Tensor:
    out = x.flip(-1) if mirror else x
    return torch.rot90(out, k=quarter_turns % 4, dims=(-2, -1)) if quarter_turns % 4 else out


def _undo_dihedral(x: torch.Tensor, *, mirror: bool, quarter_turns: int) -> torch.Tensor:
    out = torch.rot90(x, k=-(quarter_turns % 4), dims=(-2, -1)) if quarter_turns % 4 else x
    return out.flip(-1) if mirror else out


class TwinTransform:
    """A(.) of the twin branch.

    Example:
        >>> twin = TwinTransform(TwinConfig(scale=0.5, flips=True))
        >>> params = twin.draw([3, 7], seed=0, epoch=0)
        >>> small = twin.apply(images, params)                 # (2, 3, 112, 112) from (2, 3, 224, 224)
        >>> back = twin.invert(small, params, shape_hw=(224, 224))
    """

    def __init__(self, cfg: TwinConfig) -> None:
        self.cfg = cfg

    def output_hw(self, shape_hw: tuple[int, int]) -> tuple[int, int]:
        """Size of A(x) for an input of ``shape_hw`` (before any quarter turn; patches are square when turned)."""
        return max(1, math.floor(shape_hw[0] * self.cfg.scale)), max(1, math.floor(shape_hw[1] * self.cfg.scale))

    def draw(self, indices: Sequence[int], *, seed: int, epoch: int) -> TwinParams:
        """Per-patch choices for the patches ``indices`` (dataset positions) of ``epoch``."""
        if not (self.cfg.flips or self.cfg.rotations):
            return TwinParams.identity(len(indices))
        mirrors, turns = [], []
        for index in indices:
            rng = np.random.default_rng([seed, epoch, int(index), _TWIN_STREAM])
            mirrors.append(bool(rng.integers(0, 2)) if self.cfg.flips else False)
            turns.append(int(rng.integers(0, 4)) if self.cfg.rotations else 0)
        return TwinParams(mirrors=tuple(mirrors), quarter_turns=tuple(turns))

    def apply(self, x: torch.Tensor, params: TwinParams, *, shape_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """A(x): rescale to ``shape_hw`` (default :meth:`output_hw`), then mirror/turn each patch.

        Args:
            x: (B, C, H, W) float images or CAMs.
            params: from :meth:`draw`, one entry per patch.
            shape_hw: target size before turning; CAMs pass the twin image's size to land on its grid.

        Returns:
            (B, C, h, w) float; square inputs stay square under turns.
        """
        if x.shape[0] != len(params.mirrors):
            raise ValueError(f"{x.shape[0]} patches but twin parameters for {len(params.mirrors)}")
        if any(t % 2 for t in params.quarter_turns) and x.shape[-1] != x.shape[-2]:
            raise ValueError(f"quarter turns need square patches, got {tuple(x.shape[-2:])}")
        target = shape_hw or self.output_hw((x.shape[-2], x.shape[-1]))
        resized = (
            x
            if tuple(x.shape[-2:]) == tuple(target)
            else F.interpolate(x, size=target, mode="bilinear", align_corners=True)
        )
        if params.is_identity:
            return resized
        return torch.stack(
            [
                _dihedral(patch, mirror=mirror, quarter_turns=turns)
                for patch, mirror, turns in zip(resized, params.mirrors, params.quarter_turns, strict=True)
            ]
        )

    def invert(self, y: torch.Tensor, params: TwinParams, *, shape_hw: tuple[int, int]) -> torch.Tensor:
        """A^-1(y): undo each patch's turn and mirror, then rescale back to ``shape_hw``.

        The dihedral part is exact; the rescale is bilinear with ``align_corners=True``, so ``invert(apply(x))``
        returns x exactly for fields linear in the pixel coordinates and approximately (a low-pass copy) otherwise.
        """
        if y.shape[0] != len(params.mirrors):
            raise ValueError(f"{y.shape[0]} patches but twin parameters for {len(params.mirrors)}")
        if not params.is_identity:
            y = torch.stack(
                [
                    _undo_dihedral(patch, mirror=mirror, quarter_turns=turns)
                    for patch, mirror, turns in zip(y, params.mirrors, params.quarter_turns, strict=True)
                ]
            )
        if tuple(y.shape[-2:]) == tuple(shape_hw):
            return y
        return F.interpolate(y, size=shape_hw, mode="bilinear", align_corners=True)
