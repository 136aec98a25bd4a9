"""Backbones from timm (``backbone: timm:<model name>``): pathology foundation models and other pretrained networks.

The timm model is built with ``pretrained=False`` (timm never reaches the network for it; the weights come from a
local file through :func:`histo_daen.models.weights.load_pretrained`) and held whole as the network's ``encoder``
child, so its state-dict keys are timm's own behind an ``encoder.`` prefix. Names that would make timm fetch a
configuration (``hf-hub:``, ``hf_hub:``, ``local-dir:``) and names timm does not register are refused.

Features come from timm's ``forward_intermediates`` (every recent timm CNN and ViT has it) under the names the CAM
network reads (:class:`~histo_daen.models.backbone.BackboneFeatures`):

==================  ===========================================  ==============================================
kind                ``conv4`` / ``conv5`` / ``conv6_pre_relu``   resolution
==================  ===========================================  ==============================================
CNN (ResNet,        the last three feature levels (ResNet:       output stride 8 (timm's ``output_stride=8``:
ConvNeXt,           ``layer2``/``layer3``/``layer4``)            dilation) where the model takes it; others keep
EfficientNet, ...)                                               their own stride, resized to the last level's grid
ViT (``vision_      patch tokens of blocks ``D/2``, ``3D/4`` and  one CAM cell per patch (16 px for ``patch16``);
transformer``,      ``D`` (of depth ``D``), through the final    any input size (``dynamic_img_size``, padded to
``eva``)            norm; class and register tokens dropped      whole patches)
==================  ===========================================  ==============================================

``conv6`` is ``ReLU(conv6_pre_relu)`` as for every backbone (reference.md 2.1: the CAM classifier reads non-negative
features). The stem frozen by ``freeze_stem`` is what runs before the first feature level taken (ResNet: ``conv1``,
``bn1``, ``layer1``, as for the built-in ResNets; ViT: ``patch_embed``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from histo_daen.errors import ConfigError
from histo_daen.models.backbone import Backbone, BackboneFeatures

__all__ = ["TIMM_PREFIX", "TimmBackbone", "timm_model_name"]

logger = logging.getLogger(__name__)

TIMM_PREFIX = "timm:"
# timm modules whose models are plain ViTs: patch tokens on a grid, dynamic input size.
_VIT_MODULES = ("timm.models.vision_transformer", "timm.models.eva")
# Prefixes that make timm.create_model read a configuration (and weights) from a hub or a folder.
_REMOTE_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


def timm_model_name(backbone: str) -> str:
    """``"timm:vit_large_patch16_224"`` -> ``"vit_large_patch16_224"``; ConfigError for other spellings."""
    if not backbone.startswith(TIMM_PREFIX) or not backbone[len(TIMM_PREFIX) :]:
        raise ConfigError(f"model.backbone: {backbone!r} is not of the form timm:<model name>")
    return backbone[len(TIMM_PREFIX) :]


def _entrypoint_module(name: str) -> str:
    """The timm module that defines ``name`` (refusing names timm does not register, and hub references)."""
    from timm.models import _registry

    if name.startswith(_REMOTE_PREFIXES):
        raise ConfigError(
            f"model.backbone: timm:{name} would make timm fetch from a hub or folder; give the architecture name "
            "(e.g. timm:vit_large_patch16_224) and the weights file with --pretrained"
        )
    architecture = name.split(".")[0]  # "resnet50.a1_in1k" -> "resnet50": the tag only names weights
    if not _registry.is_model(architecture):
        from difflib import get_close_matches

        nearest = get_close_matches(architecture, _registry.list_models(), n=3)
        hint = f" Did you mean {', '.join(nearest)}?" if nearest else ""
        raise ConfigError(f"model.backbone: timm has no model {architecture!r}.{hint} See timm.list_models().")
    return str(_registry.model_entrypoint(architecture).__module__)


def _numbers_from_text(args: dict[str, Any]) -> dict[str, Any]:
    """YAML 1.1 (PyYAML) reads ``1e-5`` (no dot) as a string; timm wants the number (UNI's ``init_values``)."""
    converted = dict(args)
    for key, value in args.items():
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # a real string argument stays, e.g. act_layer: gelu
                converted[key] = float(value)
    return converted


def _stem_names(encoder: nn.Module, first_level_module: str) -> tuple[str, ...]:
    """Dotted names of the encoder's modules that run before ``first_level_module`` (e.g. ``"stages.1"``)."""
    parts = first_level_module.split(".")
    names: list[str] = []
    parent_path: list[str] = []
    parent = encoder
    for part in parts:
        for child_name, _ in parent.named_children():
            if child_name == part:
                break
            names.append(".".join([*parent_path, child_name]))
        parent_path.append(part)
        parent = parent.get_submodule(part)
    return tuple(f"encoder.{name}" for name in names)


class TimmBackbone(Backbone):
    """A timm model as an output-stride-8 (CNN) or patch-grid (ViT) backbone.

    Args:
        name: the timm architecture, e.g. ``"resnet50"``, ``"vit_large_patch16_224"`` (no hub prefixes).
        input_size: the patch side the model is trained at (a ViT's ``img_size``: its position-embedding grid).
        model_args: extra ``timm.create_model`` arguments the weights need, e.g. ``{"init_values": 1e-5}`` for UNI.
    """

    def __init__(self, name: str, *, input_size: int = 224, model_args: dict[str, Any] | None = None) -> None:
        super().__init__()
        import timm

        module = _entrypoint_module(name)
        self.timm_name = name
        self.is_vit = module in _VIT_MODULES
        args: dict[str, Any] = {"pretrained": False, "num_classes": 0, **_numbers_from_text(model_args or {})}
        args["pretrained"] = False  # never from the hub, whatever model_args say
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path"):
            if key in args:
                raise ConfigError(f"model.timm_args: {key} is not allowed; weights come from --pretrained FILE")
        encoder: Any  # timm's models are typed nn.Module; their own attributes (blocks, feature_info) are used here
        if self.is_vit:
            args = {"img_size": input_size, "dynamic_img_size": True, "dynamic_img_pad": True, **args}
            encoder = timm.create_model(name, **args)
        else:
            try:
                encoder = timm.create_model(name, output_stride=8, **args)
            except (TypeError, AssertionError, ValueError) as err:
                logger.info("timm:%s does not take output_stride=8 (%s); using its own stride", name, err)
                encoder = timm.create_model(name, **args)
        if not hasattr(encoder, "forward_intermediates"):
            raise ConfigError(
                f"model.backbone: timm:{name} has no forward_intermediates, so its feature maps cannot be taken; "
                "choose a ResNet, ConvNeXt, EfficientNet or ViT"
            )
        if self.is_vit:
            depth = len(encoder.blocks)
            levels: list[int] = sorted({max(depth // 2 - 1, 0), max(3 * depth // 4 - 1, 0), depth - 1})
            if len(levels) < 3:
                raise ConfigError(f"model.backbone: timm:{name} has {depth} blocks; at least 3 are needed")
        else:
            n_levels = len(encoder.feature_info)
            if n_levels < 3:
                raise ConfigError(f"model.backbone: timm:{name} has {n_levels} feature levels; at least 3 are needed")
            levels = list(range(n_levels - 3, n_levels))
        # Drops the classifier (and, for ViTs, heads such as attention pooling) that the features never reach.
        self.levels: list[int] = list(encoder.prune_intermediate_layers(levels, prune_norm=False, prune_head=True))
        self.encoder = encoder
        info = encoder.feature_info
        if self.is_vit:
            channels = [encoder.embed_dim] * 3
            self.stem_names: tuple[str, ...] = ("encoder.patch_embed",)
            self.output_stride: int = int(encoder.patch_embed.patch_size[0])
        else:
            channels = [int(info[level]["num_chs"]) for level in self.levels]
            self.stem_names = _stem_names(encoder, str(info[self.levels[0]]["module"]))
            self.output_stride = int(info[self.levels[-1]]["reduction"])
        self.feature_channels = {"conv4": channels[0], "conv5": channels[1], "conv6": channels[2]}
        config = getattr(encoder, "pretrained_cfg", {}) or {}
        # What timm says the architecture's published weights expect; the weights' own metadata or the user decide.
        self.default_mean: tuple[float, ...] = tuple(config.get("mean", (0.485, 0.456, 0.406)))
        self.default_std: tuple[float, ...] = tuple(config.get("std", (0.229, 0.224, 0.225)))
        self.classifier_names: tuple[str, ...] = tuple(
            [config["classifier"]] if isinstance(config.get("classifier"), str) else config.get("classifier", ())
        )

    def forward_features(self, x: torch.Tensor) -> BackboneFeatures:
        """(B, 3, H, W) float, normalised -> the three feature levels on one grid (the last level's)."""
        features = cast(Any, self.encoder).forward_intermediates(
            x, indices=self.levels, norm=self.is_vit, output_fmt="NCHW", intermediates_only=True
        )
        conv4, conv5, last = features  # (B, C, h_i, w_i)
        size = last.shape[-2:]
        conv4, conv5 = (
            f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            for f in (conv4, conv5)
        )
        return BackboneFeatures(conv4=conv4, conv5=conv5, conv6_pre_relu=last)
