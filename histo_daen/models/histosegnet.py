"""HistoSegNet's classifier as a baseline network (Chan et al., ICCV 2019; reference.md §7), variant ``histosegnet``.

HistoSegNet segments tissue from a *plain* multi-label classifier ("HistoNet": convolutions, then dense layers
on the pooled or flattened activation, sigmoid outputs) by Grad-CAM at the last activation, then confidence
scaling, a white-background map and class subtraction (done in :func:`histo_daen.inference.cams.compute_cams`,
which dispatches on this class), then a dense CRF.

What differs from the reference code (``lyndonchan/hsn_v1``, Keras):

- The convolutional part is one of this project's output-stride-8 backbones (``model.backbone``, ResNet38 or a
  dilated torchvision ResNet) instead of the VGG-like HistoNet, so every method compared here sees the same
  features and the same pretrained weights; the head is HistoNet-style: global average pooling, a dense layer with
  ReLU and dropout, a dense output layer. With dense layers after the pooling, Grad-CAM's channel weights depend
  on the image (with a single linear layer Grad-CAM would equal the plain CAM up to a factor).
- It is trained on LUAD patch labels with the multi-label soft-margin loss alone (``histo-daen train --variant
  histosegnet``); ADP's class hierarchy and the per-class thresholds of its ``.mat`` file do not apply: the
  threshold is ``inference.label_threshold``.
- No dense CRF: ``pydensecrf`` is unmaintained since 2018 and has no wheel for this Python (a C++ build from
  source); its fork ``pydensecrf2`` ships no wheel here either. The label map is the argmax of the class-subtracted
  maps (:func:`histo_daen.inference.labels.cams_to_label_map`).

The network reuses :class:`~histo_daen.models.cam_net.CamNet` for what every variant shares (backbone layers
registered under their reference names, input normalisation, BatchNorm and stem freezing, LR groups) and replaces
its 1x1 CAM classifier ``fc8`` by the dense head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from histo_daen.config.schema import ModelConfig
from histo_daen.models.backbone import Backbone
from histo_daen.models.cam_net import CamNet, CamNetOutput, ModelAbilities
from histo_daen.models.registry import build_backbone, register_variant

__all__ = ["HistoSegNet", "build_histosegnet"]

_GRADIENT_RMS_EPS = 1e-5  # hsn_v1 divides the gradients by their RMS (+ a small constant) before averaging


class HistoSegNet(CamNet):
    """Backbone -> global average pooling -> dense + ReLU + dropout -> dense: a plain multi-label classifier.

    Args:
        config: the model config (``variant="histosegnet"``; attention and PCM fields are unused).
        backbone: an output-stride-8 backbone; its layers are registered on this module under their own names.
        hidden_channels: width of the hidden dense layer; default a quarter of the backbone's channels (at least
            16), HistoNet's dense layer being narrower than its last convolution.
    """

    def __init__(self, config: ModelConfig, backbone: Backbone, *, hidden_channels: int | None = None) -> None:
        super().__init__(config, backbone, attention=None, use_pcm=False)
        del self.fc8  # the classifier is the dense head below, not a 1x1 CAM convolution
        channels = backbone.feature_channels["conv6"]
        hidden = hidden_channels if hidden_channels is not None else max(16, channels // 4)
        self.fc_hidden = nn.Linear(channels, hidden)
        self.dropout_fc = nn.Dropout(0.5)
        self.fc_out = nn.Linear(hidden, config.num_classes)
        self.train()

    @property
    def abilities(self) -> ModelAbilities:
        """No PCM; its class maps are Grad-CAMs of the dense head."""
        return ModelAbilities(pcm=False, grad_cam=True)

    def new_modules(self) -> list[nn.Module]:
        """The dense head, trained from scratch at x10 LR (the backbone at x1, as for the CAM networks)."""
        return [self.fc_hidden, self.fc_out]

    def classify(self, activation: torch.Tensor) -> torch.Tensor:
        """(B, C6, h, w) last activation -> (B, K) logits."""
        pooled = activation.mean(dim=(2, 3))  # (B, C6)
        return self.fc_out(self.dropout_fc(F.relu(self.fc_hidden(pooled))))

    def head_maps(self, activation: torch.Tensor) -> torch.Tensor:
        """(B, C6, h, w) -> (B, K, h, w): the dense head applied at every location (no dropout).

        A cheap class map for the ``cams`` field of the output; HistoSegNet's own maps are :meth:`grad_cams`.
        """
        per_pixel = activation.permute(0, 2, 3, 1)  # (B, h, w, C6)
        scores = self.fc_out(F.relu(self.fc_hidden(per_pixel)))  # (B, h, w, K)
        return scores.permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> CamNetOutput:
        """(B, 3, H, W) float32 RGB in [0, 1] -> logits (B, K) and head maps (B, K, h, w); no refined CAMs."""
        activation = self.forward_features(x).conv6  # (B, C6, h, w), after the last ReLU
        return CamNetOutput(logits=self.classify(activation), cams=self.head_maps(activation))

    def grad_cams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grad-CAM of every class at the last activation (reference.md §7 step 2, before resizing).

        For class c: gradients of its logit with respect to the activation, divided by their root mean square,
        averaged over space to give channel weights; the map is ReLU(sum of weighted channels). Needs autograd
        (call it under ``torch.enable_grad()`` if the caller disabled it); the backbone runs without gradients.

        Args:
            x: (B, 3, H, W) float32 RGB in [0, 1].

        Returns:
            logits (B, K) and maps (B, K, h, w) float, non-negative, not normalised; both detached.
        """
        with torch.no_grad():
            activation = self.forward_features(x).conv6  # (B, C6, h, w)
        activation = activation.detach().requires_grad_(True)
        logits = self.classify(activation)  # (B, K)
        maps = []
        n_classes = logits.shape[1]
        for c in range(n_classes):
            # Images are independent in eval mode, so one backward of the batch sum gives every image's gradient.
            (gradient,) = torch.autograd.grad(logits[:, c].sum(), activation, retain_graph=c < n_classes - 1)
            rms = gradient.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()  # (B, 1, 1, 1)
            weights = (gradient / (rms + _GRADIENT_RMS_EPS)).mean(dim=(2, 3), keepdim=True)  # (B, C6, 1, 1)
            maps.append(F.relu((weights * activation).sum(dim=1)))  # (B, h, w)
        return logits.detach(), torch.stack(maps, dim=1).detach()


def build_histosegnet(cfg: ModelConfig) -> HistoSegNet:
    """The ``histosegnet`` variant: the config's backbone and width under the dense HistoNet-style head."""
    return HistoSegNet(cfg, build_backbone(cfg.backbone, width=cfg.width))


register_variant("histosegnet", build_histosegnet)
