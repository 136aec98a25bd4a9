"""The training objective: the network on both branches, and SEAM's loss terms put together (reference.md §3.3).

``seam`` (DAEN, SEAM, CM, SM): both branches, classification averaged over them, rvmin on the PCM outputs, ER
between ``A(CAM(x))`` and ``CAM(A(x))``, and the two ECR terms. ``classification`` (plain CAM, HistoSegNet, or
any model without a PCM): the multilabel soft margin on the original patches only.

As in SEAM, every CAM is first upsampled (bilinear, ``align_corners=True``) to its branch's input size; branch 1's
maps are then carried onto branch 2's grid by A.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from histo_daen.config.schema import LossConfig
from histo_daen.models.cam_net import CamNetOutput
from histo_daen.training.affine import TwinParams, TwinTransform
from histo_daen.training.losses import (
    classification_loss,
    cross_equivariant_loss,
    equivariant_loss,
    max_norm,
    rebuild_background,
    rvmin_loss,
    with_background_label,
)

__all__ = ["LOSS_TERMS", "LossTerms", "TwinNetwork", "classification_objective", "seam_objective"]

LOSS_TERMS = ("classification", "rvmin", "equivariant", "cross_equivariant")


@dataclass(frozen=True)
class LossTerms:
    """The weighted total (what is back-propagated) and each unweighted term (for logging)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


class TwinNetwork(nn.Module):
    """The CAM network applied to a batch and, for the SEAM objective, to its twin ``A(x)`` in one forward.

    One module call per step keeps DistributedDataParallel's gradient hooks to one forward per backward.
    """

    def __init__(self, network: nn.Module, twin: TwinTransform | None) -> None:
        super().__init__()
        self.network = network
        self.twin = twin

    def forward(
        self, images: torch.Tensor, params: TwinParams | None = None
    ) -> tuple[CamNetOutput, CamNetOutput | None]:
        """(B, 3, H, W) RGB in [0, 1] -> (output on x, output on A(x) or None)."""
        first = self.network(images)
        if self.twin is None or params is None:
            return first, None
        return first, self.network(self.twin.apply(images, params))


def classification_objective(output: CamNetOutput, labels: torch.Tensor, cfg: LossConfig) -> LossTerms:
    """Multilabel soft margin on one branch (``output.logits``: (B, K); ``labels``: (B, K) 0/1)."""
    cls = classification_loss(output.logits, labels)
    return LossTerms(total=cfg.classification_weight * cls, terms={"classification": cls})


def _upsampled(cams: torch.Tensor, shape_hw: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(cams.float(), size=shape_hw, mode="bilinear", align_corners=True)


def cam_coverage(normalised_cams: torch.Tensor, labels: torch.Tensor, *, threshold: float = 0.2) -> torch.Tensor:
    """Share of pixels where a present class's max-normalised CAM exceeds ``threshold``: a collapse detector.

    The equivariant loss compares max-normalised CAMs, so a CAM that shrinks onto a few peak pixels (everything
    else normalised to 0 in both branches) satisfies it trivially. We measured exactly that for DAEN trained from
    random weights on synthetic patches: coverage 0.013 against SEAM's 0.27. Logged, never optimised.

    Args:
        normalised_cams: (B, K, H, W) foreground CAMs in [0, 1] (``max_norm``).
        labels: (B, K) 0/1 patch labels; only present classes count.

    Returns:
        () float32 tensor in [0, 1], detached; 0 when no class is present.
    """
    with torch.no_grad():
        present = labels[:, :, None, None].expand_as(normalised_cams) > 0
        if not bool(present.any()):
            return normalised_cams.new_zeros(())
        return (normalised_cams[present] > threshold).float().mean()


def seam_objective(
    first: CamNetOutput,
    second: CamNetOutput,
    labels: torch.Tensor,
    *,
    image_hw: tuple[int, int],
    twin: TwinTransform,
    params: TwinParams,
    cfg: LossConfig,
) -> LossTerms:
    """SEAM's loss for one step (reference.md §3.3, table "Losses").

    Args:
        first: the network's ``CamNetOutput`` on the patches x (``cams``, ``cams_refined``,
            ``background_refined`` at stride 8).
        second: its output on ``A(x)``.
        labels: (B, K) float 0/1 patch labels.
        image_hw: (H, W) of x.
        twin: the transform A that made the second input.
        params: A's per-patch choices.
        cfg: term weights, ECR top fraction and rvmin fraction.

    Returns:
        ``total = w_cls * L_cls + w_rvmin * L_rvmin + w_er * L_er + w_ecr * L_ecr`` (SEAM: all weights 1, with
        rvmin counted inside its L_cls) and the four unweighted terms, in float32.
    """
    if (
        first.cams_refined is None
        or first.background_refined is None
        or second.cams_refined is None
        or second.background_refined is None
    ):
        raise ValueError("the SEAM objective needs a network with a PCM (cams_refined); use 'classification'")
    twin_hw = twin.output_hw(image_hw)
    y = with_background_label(labels.float())  # (B, 1 + K, 1, 1)
    cls = (classification_loss(first.logits, labels) + classification_loss(second.logits, labels)) / 2

    # Raw CAMs get a zero channel 0: SEAM discards fc8's background and rebuilds it after normalisation.
    zeros1 = torch.zeros_like(first.cams[:, :1])
    zeros2 = torch.zeros_like(second.cams[:, :1])
    cam1 = _upsampled(torch.cat([zeros1, first.cams], dim=1), image_hw)  # (B, 1 + K, H, W)
    cam2 = _upsampled(torch.cat([zeros2, second.cams], dim=1), twin_hw)  # (B, 1 + K, h2, w2)
    rv1 = _upsampled(torch.cat([first.background_refined, first.cams_refined], dim=1), image_hw)
    rv2 = _upsampled(torch.cat([second.background_refined, second.cams_refined], dim=1), twin_hw)

    terms: dict[str, torch.Tensor] = {"classification": cls}
    total = cfg.classification_weight * cls
    if cfg.rvmin_weight > 0:
        rvmin = (
            rvmin_loss(rv1[:, 1:], labels, fraction=cfg.rvmin_fraction)
            + rvmin_loss(rv2[:, 1:], labels, fraction=cfg.rvmin_fraction)
        ) / 2
        terms["rvmin"] = rvmin
        total = total + cfg.rvmin_weight * rvmin

    norm1 = max_norm(cam1)  # (B, 1 + K, H, W) in [0, 1]
    terms_diagnostic = {"cam_coverage": cam_coverage(norm1[:, 1:], labels)}
    c1 = twin.apply(norm1, params, shape_hw=twin_hw) * y  # (B, 1 + K, h2, w2)
    c2 = max_norm(cam2) * y
    if cfg.equivariant_weight > 0:
        er = equivariant_loss(c1, c2)
        terms["equivariant"] = er
        total = total + cfg.equivariant_weight * er

    if cfg.cross_equivariant_weight > 0:
        r1 = twin.apply(max_norm(rv1), params, shape_hw=twin_hw) * y  # channel 0: the PCM's own background
        r2 = max_norm(rv2) * y
        ecr = cross_equivariant_loss(rebuild_background(c2), r1, top_fraction=cfg.ecr_top_fraction) + (
            cross_equivariant_loss(rebuild_background(c1), r2, top_fraction=cfg.ecr_top_fraction)
        )
        terms["cross_equivariant"] = ecr
        total = total + cfg.cross_equivariant_weight * ecr
    return LossTerms(total=total, terms=terms | terms_diagnostic)
