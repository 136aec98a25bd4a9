"""The DAEN network family: backbones, attention (CSM/CM/SM), the PCM, CAM network variants, checkpoints.

```python
from histo_daen.models import build_model
model = build_model(variant="daen", backbone="resnet18", width=0.25)
out = model(images)  # images (B, 3, H, W) float32 RGB in [0, 1]
out.logits, out.cams, out.cams_refined, out.background_refined
```

Importing this package registers the built-in variants (``daen``, ``seam``, ``cm``, ``sm``, ``cam``) and those of
optional modules of the package that register themselves (``histosegnet``). ``load_pretrained`` (local weight
files) lives in :mod:`histo_daen.models.weights` and is imported on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from histo_daen.models.attention import ChannelAttention, ChannelSpatialAttention, SpatialAttention
from histo_daen.models.backbone import Backbone, BackboneFeatures
from histo_daen.models.cam_net import CamNet, CamNetOutput
from histo_daen.models.checkpoint import (
    LoadedModel,
    checkpoint_state,
    load_model,
    read_checkpoint,
    restore_weights,
    save_checkpoint,
)
from histo_daen.models.dilated_resnet import DilatedResNet
from histo_daen.models.registry import (
    backbone_names,
    build_backbone,
    build_model,
    register_backbone,
    register_variant,
    variant_names,
)
from histo_daen.models.resnet38 import ResNet38

__all__ = [
    "Backbone",
    "BackboneFeatures",
    "CamNet",
    "CamNetOutput",
    "ChannelAttention",
    "ChannelSpatialAttention",
    "DilatedResNet",
    "LoadedModel",
    "ResNet38",
    "SpatialAttention",
    "backbone_names",
    "build_backbone",
    "build_model",
    "checkpoint_state",
    "load_model",
    "load_pretrained",
    "read_checkpoint",
    "register_backbone",
    "register_variant",
    "restore_weights",
    "save_checkpoint",
    "variant_names",
]

# Modules of this package that add variants with register_variant when imported.
_VARIANT_MODULES = ("histo_daen.models.histosegnet",)

for _module in _VARIANT_MODULES:
    if importlib.util.find_spec(_module) is not None:
        importlib.import_module(_module)


def __getattr__(name: str) -> Any:
    # PEP 562: the weights module (and its MXNet reader) loads only when someone loads weights.
    if name == "load_pretrained":
        from histo_daen.models.weights import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'histo_daen.models' has no attribute {name!r}")
