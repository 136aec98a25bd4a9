"""Variant and backbone names -> builders; :func:`build_model` is the one way to make a network from a config.

The registry is the project's one piece of module-level state: filled at import, refusing duplicates. Another
module of the package adds a variant with :func:`register_variant` at its import (``models/histosegnet.py`` does;
``histo_daen.models`` imports it when it exists), so ``build_model`` sees every variant once the package is
imported.
"""

from __future__ import annotations

from collections.abc import Callable
from difflib import get_close_matches
from typing import Any

from histo_daen.config.load import config_from_mapping, to_plain_dict
from histo_daen.config.schema import ModelConfig
from histo_daen.errors import ConfigError
from histo_daen.models.attention import ChannelSpatialAttention
from histo_daen.models.backbone import Backbone
from histo_daen.models.cam_net import CamNet
from histo_daen.models.dilated_resnet import DilatedResNet
from histo_daen.models.resnet38 import ResNet38
from histo_daen.models.timm_backbone import TIMM_PREFIX, TimmBackbone, timm_model_name

__all__ = [
    "BackboneBuilder",
    "VariantBuilder",
    "backbone_names",
    "build_backbone",
    "build_model",
    "register_backbone",
    "register_variant",
    "variant_names",
]

VariantBuilder = Callable[[ModelConfig], CamNet]
BackboneBuilder = Callable[[float], Backbone]  # width -> backbone

_VARIANTS: dict[str, VariantBuilder] = {}
_BACKBONES: dict[str, BackboneBuilder] = {}


def register_variant(name: str, builder: VariantBuilder) -> None:
    """Add a network variant: ``builder(cfg)`` returns a :class:`CamNet` (or subclass, e.g. HistoSegNet).

    Raises:
        ValueError: ``name`` is already registered (two modules claiming one name is a bug, not a user error).
    """
    if name in _VARIANTS:
        raise ValueError(f"model variant {name!r} is already registered")
    _VARIANTS[name] = builder


def register_backbone(name: str, builder: BackboneBuilder) -> None:
    """Add a backbone: ``builder(width)`` returns an output-stride-8 :class:`Backbone`."""
    if name in _BACKBONES:
        raise ValueError(f"backbone {name!r} is already registered")
    _BACKBONES[name] = builder


def variant_names() -> tuple[str, ...]:
    """The registered variants, in registration order."""
    return tuple(_VARIANTS)


def backbone_names() -> tuple[str, ...]:
    """The registered backbones, in registration order."""
    return tuple(_BACKBONES)


def _look_up(kind: str, name: str, table: dict[str, Any]) -> Any:
    if name in table:
        return table[name]
    nearest = get_close_matches(name, list(table), n=1)
    hint = f" Did you mean '{nearest[0]}'?" if nearest else ""
    raise ConfigError(f"model.{kind}: unknown {kind} {name!r}.{hint} Valid: {', '.join(table)}.")


def build_backbone(name: str, *, width: float = 1.0) -> Backbone:
    """A built-in backbone by name, randomly initialised; an unknown name is a ConfigError listing the valid ones."""
    return _look_up("backbone", name, _BACKBONES)(width)


def _backbone_for(cfg: ModelConfig) -> Backbone:
    """The config's backbone: a built-in one, or ``timm:<name>`` built from timm (random init, nothing downloaded)."""
    if not cfg.backbone.startswith(TIMM_PREFIX):
        return build_backbone(cfg.backbone, width=cfg.width)
    if cfg.width != 1.0:
        raise ConfigError(f"model.width={cfg.width}: timm backbones are built as timm defines them (width 1.0)")
    return TimmBackbone(timm_model_name(cfg.backbone), input_size=cfg.input_size, model_args=cfg.timm_args)


def build_model(cfg: ModelConfig | None = None, /, **fields: Any) -> CamNet:
    """Build a randomly initialised network from a config (pretrained weights are loaded afterwards).

    Args:
        cfg: the model config; None starts from the defaults.
        **fields: ModelConfig fields that replace those of ``cfg``, e.g. ``build_model(variant="seam",
            backbone="resnet18", width=0.25)``.

    Returns:
        The network, a :class:`CamNet` (HistoSegNet is one too), in train mode, on the CPU: forward maps
        (B, 3, H, W) float32 RGB in [0, 1] to a ``CamNetOutput``; ``abilities``, ``class_maps`` and
        ``parameter_groups`` are its typed face (:class:`~histo_daen.models.cam_net.CamModel`).

    Raises:
        ConfigError: an unknown variant or backbone (the message lists the valid names), or a field with an
            invalid value.
    """
    raw = to_plain_dict(cfg if cfg is not None else ModelConfig()) | fields
    # Re-validated even for a ready-made config: a dataclass built in code skips the loader's Literal checks.
    checked = config_from_mapping(ModelConfig, raw, "model").with_reference_choices()
    builder = _look_up("variant", checked.variant, _VARIANTS)
    if checked.backbone.startswith(TIMM_PREFIX):
        timm_model_name(checked.backbone)
    else:
        _look_up("backbone", checked.backbone, {**_BACKBONES, f"{TIMM_PREFIX}<name>": None})
    return builder(checked)


def _cam_net(cfg: ModelConfig, *, use_channel: bool, use_spatial: bool, use_pcm: bool) -> CamNet:
    backbone = _backbone_for(cfg)
    attention = None
    if use_channel or use_spatial:
        attention = ChannelSpatialAttention(
            backbone.feature_channels["conv6"],
            reduction=cfg.attention_reduction,
            kernel_size=cfg.spatial_kernel,
            pooling=cfg.spatial_pooling,
            use_channel=use_channel,
            use_spatial=use_spatial,
            form=cfg.attention_form or "reference",  # set by ModelConfig.with_reference_choices
        )
    return CamNet(cfg, backbone, attention=attention, use_pcm=use_pcm)


def _daen(cfg: ModelConfig) -> CamNet:
    return _cam_net(cfg, use_channel=True, use_spatial=True, use_pcm=True)


def _cm(cfg: ModelConfig) -> CamNet:
    return _cam_net(cfg, use_channel=True, use_spatial=False, use_pcm=True)


def _sm(cfg: ModelConfig) -> CamNet:
    return _cam_net(cfg, use_channel=False, use_spatial=True, use_pcm=True)


def _seam(cfg: ModelConfig) -> CamNet:
    return _cam_net(cfg, use_channel=False, use_spatial=False, use_pcm=True)


def _cam(cfg: ModelConfig) -> CamNet:
    return _cam_net(cfg, use_channel=False, use_spatial=False, use_pcm=False)


for _name, _builder in [("daen", _daen), ("seam", _seam), ("cm", _cm), ("sm", _sm), ("cam", _cam)]:
    register_variant(_name, _builder)

register_backbone("resnet38", lambda width: ResNet38(width=width))
register_backbone("resnet18", lambda width: DilatedResNet(depth=18, width=width))
register_backbone("resnet50", lambda width: DilatedResNet(depth=50, width=width))
