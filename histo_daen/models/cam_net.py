"""The CAM network of DAEN and its relatives: backbone -> (attention) -> CAM classifier (-> PCM refinement).

One class serves every built-in variant (registered in :mod:`histo_daen.models.registry`):

==========  ===========================================  ====  ===================================
variant     between the backbone and fc8                 PCM   source
==========  ===========================================  ====  ===================================
``daen``    CSM: channel then spatial attention          yes   DAEN code (reference.md 4.1-4.2)
``cm``      channel attention only                       yes   paper Table 1 (form unverified)
``sm``      spatial attention only                       yes   paper Table 1 (form unverified)
``seam``    nothing (``ReLU(bn7)``)                      yes   SEAM ``network/resnet38_SEAM.py``
``cam``     nothing                                      no    plain CAM classifier (MLPS stage 1)
==========  ===========================================  ====  ===================================

Heads and initialisation as reference.md section 2.1: ``dropout7`` = Dropout2d(0.5) on the classifier input;
``fc8`` 1x1 conv C6 -> 1 + K (``background_channel``; channel 0 is never supervised and is dropped from every
output) or -> K, no bias, Xavier-uniform; PCM embeddings ``f8_3`` (C4 -> 64) and ``f8_4`` (C5 -> 128), no bias,
Kaiming-normal; projection ``f9`` (3 + 64 + 128 -> 192), no bias, Xavier-uniform with gain 4. The backbone's layers
are registered on the network itself, so the state dict has SEAM's keys (``conv1a.weight``, ``b4_5.bn_branch2a.
running_mean``, ``fc8.weight``, ``f9.weight``) or torchvision's (``layer3.0.conv2.weight``) with no prefix;
the attention module is ``csm`` (``csm.channel_attention.mlp.0.weight``, ``csm.spatial_attention.conv.weight``).

Reference behaviour versus choices (reference.md 2.2, 3.4, 4.4; the fields are in
:class:`~histo_daen.config.ModelConfig`, the reference value is always available):

- ``logits_pooling``: SEAM scores classes by global average pooling of the CAMs *after* bilinear upsampling to
  the input size with ``align_corners=True`` (``"upsampled"``), which gives the border cells half the weight of the
  others. The default ``"stride8"`` averages the stride-8 CAM with equal weights; it equals MLPS's
  ``fc8(GAP(features))`` exactly (fc8 is linear and bias-free) and skips a full-resolution upsampling.
- ``attention_position``: the code applies the attention to ``bn7``'s output before the final ReLU and its own
  ReLU replaces it (``"pre_relu"``, default); the paper says "the output of the classification network", which
  ``"post_relu"`` reads as ``conv6`` after the ReLU (section 4.4, item 1).
- ``spatial_pooling``: concatenated (code, default) or summed (paper) pooled maps; see
  :mod:`histo_daen.models.attention`.
- ``attention_lr_group``: the code leaves the CSM out of its from-scratch list, so it trains at the backbone's LR
  (``"backbone"``, default, x1); ``"new"`` puts it with fc8 and the PCM layers (x10), a documented deviation.
- ``pcm_output``: the code's refined CAM *replaces* the CAM (``"replace"``, default); the paper's text says the
  PCM output is "added to the original CAMs", read here as ``seed + refined`` where ``seed`` is the normalised,
  winner-take-all CAM the PCM refines (section 4.4, item 7).
- ``freeze_batchnorm`` / ``freeze_stem``: reference section 1.3 freezes every BatchNorm (eval mode, no affine
  gradient) and ``conv1a``/``b2*``. For the torchvision backbones the same rule freezes ``conv1``/``bn1``/
  ``layer1``; frozen BN is also the sensible default there, because batches of 8 patches give noisy batch
  statistics. Both can be switched off, e.g. to train a small backbone from random initialisation.

Fixed to the code, with the reason: the PCM's ReLU before normalising (item 6: without it the normaliser can be
zero or negative), its inputs (item 5: image resized with ``align_corners=True``, detached ``conv4``/``conv5``),
and the synthetic background of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from histo_daen.config.schema import ModelConfig
from histo_daen.models.backbone import Backbone, BackboneFeatures
from histo_daen.models.pcm import pcm_seed_cams, pixel_affinity, refine_cams

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CamModel",
    "CamNet",
    "CamNetOutput",
    "GradCamModel",
    "MapKind",
    "ModelAbilities",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_PCM_EMBED_CHANNELS = (64, 128, 192)  # f8_3, f8_4, f9 output channels (reference.md 2.1), kept at every width
_HEAD_NAMES = ("dropout7", "fc8", "f8_3", "f8_4", "f9", "csm")


class CamNetOutput(NamedTuple):
    """What a CAM network returns for a batch of B images of H x W; h = ceil(H / 8), w = ceil(W / 8).

    Attributes:
        logits: (B, K) float class scores (foreground classes only; the multilabel loss takes them as they are).
        cams: (B, K, h, w) float raw CAMs at output stride 8 (fc8 output, any sign, not normalised).
        cams_refined: (B, K, h, w) float32 PCM-refined foreground CAMs (SEAM's ``cam_rv[:, 1:]``), or None for
            variants without PCM.
        background_refined: (B, 1, h, w) float32 PCM-refined synthetic background (``cam_rv[:, :1]``), or None.
    """

    logits: torch.Tensor
    cams: torch.Tensor
    cams_refined: torch.Tensor | None = None
    background_refined: torch.Tensor | None = None


MapKind = Literal["refined", "raw", "grad-cam"]  # which class maps inference computes (recorded in outputs)


@dataclass(frozen=True)
class ModelAbilities:
    """What a network can do, declared by the network instead of guessed by its callers.

    Attributes:
        pcm: it has SEAM's pixel-correlation module, so PCM-refined CAMs and the SEAM objective.
        grad_cam: its class maps are Grad-CAMs of a dense classifier (HistoSegNet), not fc8 CAMs; inference then
            adds HistoSegNet's white-background map and class subtraction.
    """

    pcm: bool
    grad_cam: bool = False


@runtime_checkable
class CamModel(Protocol):
    """The small face every network shows training and inference: :class:`CamNet` and HistoSegNet alike.

    Besides ``nn.Module``'s own methods: ``config``, ``abilities`` (what it supports), ``forward`` (logits and
    CAMs) and ``parameter_groups`` (LR groups); a network with ``abilities.grad_cam`` also has ``grad_cams(x)``.
    Callers ask these, never the class: inference picks its maps from ``abilities``, training its objective.
    """

    config: ModelConfig

    @property
    def abilities(self) -> ModelAbilities: ...

    def __call__(self, x: torch.Tensor) -> CamNetOutput: ...

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]: ...


@runtime_checkable
class GradCamModel(CamModel, Protocol):
    """A network whose class maps are Grad-CAMs (``abilities.grad_cam``), e.g. HistoSegNet."""

    def grad_cams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class CamNet(nn.Module):
    """Backbone -> optional attention -> Dropout2d -> fc8 CAMs, optionally refined by the PCM.

    Build it through :func:`histo_daen.models.build_model`, which picks the attention and PCM per variant.

    Args:
        config: the model config (stored as ``self.config``; checkpoints save it).
        backbone: an output-stride-8 :class:`Backbone`; its layers are registered on this module under their
            own names (no ``backbone.`` prefix), and :attr:`backbone` gives the backbone object back.
        attention: module mapping (B, C6, h, w) -> (B, C6, h, w), or None.
        use_pcm: add the PCM layers and return refined CAMs.
    """

    input_mean: torch.Tensor  # (1, 3, 1, 1) buffers, set from config.input_normalisation
    input_std: torch.Tensor

    def __init__(
        self, config: ModelConfig, backbone: Backbone, *, attention: nn.Module | None = None, use_pcm: bool = True
    ) -> None:
        super().__init__()
        self.config = config.with_reference_choices()
        own_tensors = [*backbone.named_parameters(recurse=False), *backbone.named_buffers(recurse=False)]
        if own_tensors:
            raise ValueError(f"backbone tensors must live in submodules, found {[n for n, _ in own_tensors]}")
        for name, child in backbone.named_children():
            if name in _HEAD_NAMES:
                raise ValueError(f"backbone layer {name!r} clashes with a head of the CAM network")
            self.add_module(name, child)
        # A plain tuple keeps the backbone object out of the module tree (its layers are registered above).
        self._backbone_ref = (backbone,)
        channels = backbone.feature_channels
        k = config.num_classes
        if attention is not None:
            self.csm = attention
        self.dropout7 = nn.Dropout2d(0.5)
        self.fc8 = nn.Conv2d(channels["conv6"], k + 1 if config.background_channel else k, 1, bias=False)
        nn.init.xavier_uniform_(self.fc8.weight)
        self.use_pcm = use_pcm
        if use_pcm:
            e3, e4, projected = _PCM_EMBED_CHANNELS
            self.f8_3 = nn.Conv2d(channels["conv4"], e3, 1, bias=False)
            self.f8_4 = nn.Conv2d(channels["conv5"], e4, 1, bias=False)
            self.f9 = nn.Conv2d(3 + e3 + e4, projected, 1, bias=False)
            nn.init.kaiming_normal_(self.f8_3.weight)
            nn.init.kaiming_normal_(self.f8_4.weight)
            nn.init.xavier_uniform_(self.f9.weight, gain=4)
        mean_std = {
            "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
            "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
            "custom": (config.input_mean, config.input_std),  # e.g. a foundation model's own statistics
        }[config.input_normalisation]
        mean = torch.tensor(mean_std[0], dtype=torch.float32).reshape(1, 3, 1, 1)
        std = torch.tensor(mean_std[1], dtype=torch.float32).reshape(1, 3, 1, 1)
        # Not persistent: the state dict keeps the reference key set; the config says how to normalise.
        self.register_buffer("input_mean", mean, persistent=False)
        self.register_buffer("input_std", std, persistent=False)
        self.train()  # a new module is in train mode: apply the BatchNorm and stem freezing now

    @property
    def backbone(self) -> Backbone:
        """The backbone object; its layers are this module's children of the same names."""
        return self._backbone_ref[0]

    @property
    def abilities(self) -> ModelAbilities:
        """PCM or not (by variant); fc8 CAMs, never Grad-CAM."""
        return ModelAbilities(pcm=self.use_pcm)

    @property
    def attention(self) -> nn.Module | None:
        """The attention module between the backbone and fc8 (``csm``), or None."""
        return self._modules.get("csm")

    def new_modules(self) -> list[nn.Module]:
        """Layers trained from scratch at x10 LR: fc8 and the PCM layers (+ attention if ``attention_lr_group``)."""
        names = ["fc8", "f8_3", "f8_4", "f9"] + (["csm"] if self.config.attention_lr_group == "new" else [])
        modules = [self._modules.get(name) for name in names]
        return [module for module in modules if module is not None]

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters split for the optimiser: ``backbone`` (LR x1) and ``new`` (LR x10).

        Frozen parameters (BatchNorm affine, the stem) are in neither. With ``attention_lr_group="backbone"``
        (the reference code) the attention module is in ``backbone``. No layer here has a bias, so SEAM's
        x2 / x20 bias groups would be empty (reference.md 3.4).
        """
        new_ids = {id(p) for module in self.new_modules() for p in module.parameters()}
        trainable = [p for p in self.parameters() if p.requires_grad]
        return {
            "backbone": [p for p in trainable if id(p) not in new_ids],
            "new": [p for p in trainable if id(p) in new_ids],
        }

    def _apply_freezing(self) -> None:
        if self.config.freeze_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.requires_grad_(False)
        if self.config.freeze_stem:
            for name in self.backbone.stem_names:  # top-level layers, or dotted paths (encoder.patch_embed)
                self.get_submodule(name).requires_grad_(False)

    def train(self, mode: bool = True) -> CamNet:
        """Train mode with the reference freezing: BatchNorm stays in eval mode (running statistics are used and
        never updated) when ``freeze_batchnorm``; Dropout follows ``mode``. Frozen parameters are re-frozen."""
        super().train(mode)
        self.backbone.training = mode
        if self.config.freeze_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        self._apply_freezing()
        return self

    def normalise_input(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float RGB in [0, 1] -> what the backbone reads (normalised by the config's mean and std)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if self.config.input_normalisation == "none":
            return x
        return (x - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype)

    def forward_features(self, x: torch.Tensor) -> BackboneFeatures:
        """(B, 3, H, W) float RGB in [0, 1] -> the backbone's named stride-8 features."""
        return self.backbone.forward_features(self.normalise_input(x))

    def classifier_input(self, features: BackboneFeatures) -> torch.Tensor:
        """The (B, C6, h, w) map fc8 reads: ``conv6``, or the attention's output at ``attention_position``."""
        attention = self.attention
        if attention is None:
            return features.conv6
        if self.config.attention_position == "pre_relu":
            return attention(features.conv6_pre_relu)
        return attention(features.conv6)

    def forward_cams(self, features: BackboneFeatures) -> torch.Tensor:
        """Backbone features -> (B, K, h, w) raw foreground CAMs (fc8's background channel dropped)."""
        raw = self.fc8(self.dropout7(self.classifier_input(features)))  # (B, K or 1 + K, h, w)
        return raw[:, 1:] if self.config.background_channel else raw

    def forward_pcm(
        self, normalised_images: torch.Tensor, features: BackboneFeatures, cams: torch.Tensor
    ) -> torch.Tensor:
        """SEAM's PCM (reference.md 2.2 step 3): (B, 1 + K, h, w) float32 refined scores, channel 0 background.

        Args:
            normalised_images: (B, 3, H, W) the backbone's input (after :meth:`normalise_input`).
            features: the backbone features of those images.
            cams: (B, K, h, w) raw foreground CAMs.
        """
        h, w = cams.shape[-2:]
        seed = pcm_seed_cams(cams)  # (B, 1 + K, h, w), no gradient
        e3 = F.relu(self.f8_3(features.conv4.detach()))  # (B, 64, h, w)
        e4 = F.relu(self.f8_4(features.conv5.detach()))  # (B, 128, h, w)
        image = F.interpolate(normalised_images, size=(h, w), mode="bilinear", align_corners=True)  # (B, 3, h, w)
        embeddings = self.f9(torch.cat([image.to(e3.dtype), e3, e4], dim=1))  # (B, 192, h, w), no activation
        refined = refine_cams(seed, pixel_affinity(embeddings))  # (B, 1 + K, h, w)
        return refined + seed if self.config.pcm_output == "add" else refined

    def forward(self, x: torch.Tensor) -> CamNetOutput:
        """(B, 3, H, W) float32 RGB in [0, 1] -> :class:`CamNetOutput` at output stride 8."""
        size_hw = x.shape[-2:]
        normalised = self.normalise_input(x)
        features = self.backbone.forward_features(normalised)
        cams = self.forward_cams(features)  # (B, K, h, w)
        if self.config.logits_pooling == "upsampled":
            upsampled = F.interpolate(cams, size=size_hw, mode="bilinear", align_corners=True)  # (B, K, H, W)
            logits = upsampled.mean(dim=(2, 3))
        else:
            logits = cams.mean(dim=(2, 3))  # (B, K)
        if not self.use_pcm:
            return CamNetOutput(logits=logits, cams=cams)
        refined = self.forward_pcm(normalised, features, cams)
        return CamNetOutput(logits=logits, cams=cams, cams_refined=refined[:, 1:], background_refined=refined[:, :1])
