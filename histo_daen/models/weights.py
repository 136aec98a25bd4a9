"""Pretrained weights from local files, and the import of SEAM / MLPS checkpoints as histo-daen checkpoints.

Nothing here downloads: every file is one the user names. :func:`load_pretrained` recognises what a file holds
from its content (not its name) and loads it into a network built by ``build_model``:

==============================  ===========================================================  =================
file                            what is taken                                                model backbone
==============================  ===========================================================  =================
MXNet ``.params`` (Wu's          the 191 ResNet38 tensors, renamed as SEAM's                 ``resnet38``
``ilsvrc-cls_rna-a1_cls1000``)  ``convert_mxnet_to_torch`` does; ``linear1000_*`` dropped
ResNet38 state dict, SEAM keys  the 191 backbone tensors (+ ``num_batches_tracked``)          ``resnet38``
full SEAM checkpoint            backbone + ``fc8`` + PCM ``f8_3``/``f8_4``/``f9``             ``resnet38``
MLPS stage-1 checkpoint         backbone + ``fc8`` (no PCM)                                  ``resnet38``
torchvision ResNet state dict   every tensor but ``fc.*`` (the ImageNet classifier)          ``resnet18/50``
histo-daen checkpoint (``.pt``)  its backbone (heads left at their init): e.g. start DAEN     same as the file
                                from a plain CAM classifier trained first
timm state dict (``.safetensors``  every tensor the features use, through timm's own            ``timm:<name>``
or ``.pth``; UNI, ...)           ``checkpoint_filter_fn`` (position-embedding grid, DINOv2's
                                original layout); the classifier / heads dropped
==============================  ===========================================================  =================

``.safetensors`` files are read with safetensors (no pickle at all); everything else with ``torch.load(...,
weights_only=True)``.

The key names need no mapping beyond the MXNet one: :class:`~histo_daen.models.CamNet` registers its backbone's
layers under the reference names (SEAM's ``conv1a.weight``, ``b4_5.bn_branch2a.running_mean``, ``fc8.weight``;
torchvision's ``layer3.0.conv2.weight``). ``module.`` / ``_orig_mod.`` prefixes (DataParallel, torch.compile) and
a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper are removed first.

MXNet name conversion (reference.md section 1.4; SEAM ``network/resnet38d.py::convert_mxnet_to_torch``), after
dropping MXNet's ``arg:`` / ``aux:`` prefix::

    conv1a_weight                                     -> conv1a.weight
    res{S}a_branch{B}_weight, res{S}b{K}_branch{B}_weight  -> b{S}.conv_branch{B}.weight, b{S}_{K}.conv_branch{B}.weight
    bn{S}a_branch{B}_{P}, bn{S}b{K}_branch{B}_{P}     -> b{S}.bn_branch{B}.{P'}, b{S}_{K}.bn_branch{B}.{P'}
    bn7_{P}                                           -> bn7.{P'}
    linear1000_*                                      -> dropped (the ImageNet classifier)

with B in {1, 2a, 2b1, 2b2} and P -> P' = gamma -> weight, beta -> bias, moving_mean -> running_mean,
moving_var -> running_var. Names matching none of these are reported as unexpected (SEAM's code would silently
have written them over ``bn7``).

Checks (``strict=True``, the default): the file is for the model's backbone family and depth; every backbone
tensor of the model comes from the file with the model's shape; each file tensor is used, or is a classifier
that pretraining leaves behind (``fc.*``, ``linear1000_*``) or a SEAM head the model does not have (the PCM of
``cam``, the ``fc8`` of ``histosegnet``); head tensors
present in both (``fc8``) have equal shapes; every loaded value is finite. ``strict=False`` accepts a partial
backbone and skips head tensors that do not fit (they are listed in the report); backbone shapes must still match.

Two things the weights do not carry and the model config must: input normalisation (SEAM/DAEN were trained on
ImageNet-normalised input, MLPS on plain [0, 1] values) and BatchNorm's epsilon (PyTorch's 1e-5, as SEAM uses
with these weights; MXNet's own default is 1e-3).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from histo_daen.atomic import check_output
from histo_daen.classes import class_set, class_set_names
from histo_daen.config.load import config_from_mapping
from histo_daen.config.schema import ModelConfig
from histo_daen.digest import file_sha256
from histo_daen.errors import ConfigError, WeightsError
from histo_daen.models.cam_net import IMAGENET_MEAN, IMAGENET_STD, CamNet
from histo_daen.models.checkpoint import checkpoint_state, save_checkpoint, strip_wrapper_prefixes
from histo_daen.models.mxnet_params import is_mxnet_params, read_mxnet_params
from histo_daen.models.registry import build_model
from histo_daen.models.safe_load import TorchFile, require_file, safe_torch_load
from histo_daen.models.timm_backbone import TimmBackbone

__all__ = [
    "ImportedCheckpoint",
    "LoadReport",
    "WeightsFile",
    "import_reference_checkpoint",
    "load_pretrained",
    "mxnet_to_seam_key",
    "read_weights_file",
]

logger = logging.getLogger(__name__)

FileKind = Literal["mxnet", "resnet38", "seam", "mlps", "torchvision", "timm", "histo-daen"]
Normalisation = Literal["imagenet", "none", "custom"]

_PCM_LAYERS = ("f8_3", "f8_4", "f9")
_REFERENCE_HEADS = ("fc8", *_PCM_LAYERS)  # SEAM's heads; a model without one (cam: PCM, histosegnet: fc8) skips it
_HEAD_LAYERS = (*_REFERENCE_HEADS, "csm")
_IMAGENET_CLASSIFIERS = ("fc", "linear1000")  # torchvision's and MXNet's 1000-class layers
_SEAM_BN_PARAMS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var"}
_MX_CONV = re.compile(r"res(?P<stage>\d)(?P<unit>a|b(?P<k>\d+))_(?P<branch>branch(?:1|2a|2b1|2b2))_weight")
_MX_BN = re.compile(
    r"bn(?P<stage>\d)(?P<unit>a|b(?P<k>\d+))_(?P<branch>branch(?:1|2a|2b1|2b2))_(?P<param>gamma|beta|moving_mean|moving_var)"
)
_MX_BN7 = re.compile(r"bn7_(?P<param>gamma|beta|moving_mean|moving_var)")
_TORCHVISION_DEPTHS: dict[tuple[bool, tuple[int, ...]], str] = {
    (False, (2, 2, 2, 2)): "ResNet-18",
    (False, (3, 4, 6, 3)): "ResNet-34",
    (True, (3, 4, 6, 3)): "ResNet-50",
    (True, (3, 4, 23, 3)): "ResNet-101",
    (True, (3, 8, 36, 3)): "ResNet-152",
}
_KIND_NAMES = {
    "mxnet": "MXNet ResNet38 ImageNet weights",
    "resnet38": "a ResNet38 backbone state dict (SEAM key layout)",
    "seam": "a SEAM checkpoint (ResNet38 + fc8 + PCM)",
    "mlps": "an MLPS stage-1 checkpoint (ResNet38 + fc8)",
    "torchvision": "a torchvision ResNet state dict",
    "timm": "a timm state dict",
    "histo-daen": "a histo-daen checkpoint (its backbone; the heads start fresh)",
}
_SUPPORTED = (
    "Pass the MXNet ilsvrc-cls_rna-a1_cls1000_ep-0001.params, a ResNet38 state dict in SEAM's key layout, "
    "a SEAM or MLPS stage-1 checkpoint, a torchvision ResNet-18/50 state dict, or a histo-daen checkpoint."
)
_WEIGHTS_FILE = TorchFile(noun="weights file", error=WeightsError, expected=_SUPPORTED)


# ---------------------------------------------------------------------------------------------------------------
# Reading files


@dataclass(frozen=True)
class WeightsMeta:
    """What a weights file says about its use, as torchvision's ``Weights.meta`` does: not tensors, but needed.

    Attributes:
        input_normalisation: what the network was trained on: "imagenet" (ImageNet mean/std; ImageNet weights,
            SEAM, DAEN), "none" (plain [0, 1] values; MLPS stage 1), "custom", or None when unknown.
        classes: the class names of its classifier in channel order when the file names them (histo-daen
            checkpoints), else None (ImageNet classifiers are dropped; SEAM/MLPS files store no names).
    """

    input_normalisation: Normalisation | None = None
    classes: tuple[str, ...] | None = None


# How each kind of reference file was trained (reference.md section 1; MLPS's data loader does not normalise).
_KIND_META: dict[str, WeightsMeta] = {
    "mxnet": WeightsMeta("imagenet"),
    "resnet38": WeightsMeta("imagenet"),
    "seam": WeightsMeta("imagenet"),
    "mlps": WeightsMeta("none"),
    "torchvision": WeightsMeta("imagenet"),
}


@dataclass(frozen=True)
class WeightsFile:
    """The tensors of a weights file, renamed to the reference (SEAM / torchvision) key layout.

    Attributes:
        path: the file.
        kind: what it holds (``"mxnet"``, ``"resnet38"``, ``"seam"``, ``"mlps"``, ``"torchvision"``).
        tensors: ``{key: tensor}`` on the CPU, keys without wrapper prefixes (MXNet names already converted).
        family: ``"ResNet38"`` or the torchvision depth, e.g. ``"ResNet-50"``.
        dropped: MXNet names left out on purpose (the ImageNet classifier ``linear1000_*``).
        unrecognised: MXNet names that match no ResNet38 parameter (kept out of ``tensors``).
        meta: how the weights were trained to be used (:class:`WeightsMeta`).
    """

    path: Path
    kind: FileKind
    tensors: dict[str, torch.Tensor]
    family: str
    dropped: tuple[str, ...] = ()
    unrecognised: tuple[str, ...] = ()
    meta: WeightsMeta = WeightsMeta()

    @property
    def description(self) -> str:
        return _KIND_NAMES[self.kind] if self.kind != "torchvision" else f"a torchvision {self.family} state dict"


def mxnet_to_seam_key(name: str) -> str | None:
    """A parameter name of Wu's MXNet ResNet38 -> its key in SEAM's PyTorch layout (module docstring).

    Returns:
        The key; ``None`` for the ImageNet classifier (``linear1000_*``), which is dropped.

    Raises:
        KeyError: the name is none of the ResNet38 parameters.
    """
    bare = re.sub(r"^(arg|aux):", "", name)
    if bare == "conv1a_weight":
        return "conv1a.weight"
    if bare.startswith("linear1000"):
        return None
    for pattern, kind in ((_MX_CONV, "conv"), (_MX_BN, "bn")):
        match = pattern.fullmatch(bare)
        if match:
            block = f"b{match['stage']}" + (f"_{match['k']}" if match["k"] else "")
            leaf = "weight" if kind == "conv" else _SEAM_BN_PARAMS[match["param"]]
            return f"{block}.{kind}_{match['branch']}.{leaf}"
    match = _MX_BN7.fullmatch(bare)
    if match:
        return f"bn7.{_SEAM_BN_PARAMS[match['param']]}"
    raise KeyError(name)


def _is_histo_daen_checkpoint(loaded: Any) -> bool:
    return isinstance(loaded, Mapping) and "format_version" in loaded and "model_config" in loaded


def _histo_daen_meta(loaded: Mapping[str, Any]) -> WeightsMeta:
    model_config = loaded.get("model_config")
    normalisation = model_config.get("input_normalisation") if isinstance(model_config, Mapping) else None
    classes = loaded.get("classes")
    return WeightsMeta(
        normalisation if normalisation in ("imagenet", "none", "custom") else None,
        tuple(str(c) for c in classes) if isinstance(classes, list | tuple) else None,
    )


def _unwrap_state_dict(path: Path, loaded: Any) -> dict[str, torch.Tensor]:
    if _is_histo_daen_checkpoint(loaded):
        # One of our checkpoints (e.g. a plain CAM classifier trained first); the loader takes its backbone.
        state_dict = loaded.get("state_dict")
        if not isinstance(state_dict, Mapping):
            raise WeightsError(path, "is a histo-daen checkpoint without a state_dict", "The file is damaged.")
        loaded = state_dict
    for wrapper in ("state_dict", "model"):
        # Training scripts often save {"state_dict": ..., "epoch": ...} or {"model": ..., "optimizer": ...}.
        if isinstance(loaded, Mapping) and isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
            break
    if not isinstance(loaded, Mapping) or not loaded:
        raise WeightsError(path, f"holds a {type(loaded).__name__}, not a state dict of named tensors", _SUPPORTED)
    not_tensors = [str(k) for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise WeightsError(path, f"has entries that are not tensors: {_listing(not_tensors)}", _SUPPORTED)
    return strip_wrapper_prefixes({str(k): v for k, v in loaded.items()})


def _torchvision_family(keys: Sequence[str]) -> str:
    """``"ResNet-50"`` etc. from torchvision-layout keys (blocks per stage and whether blocks have conv3)."""
    counts = []
    for stage in range(1, 5):
        indices = {int(k.split(".")[1]) for k in keys if k.startswith(f"layer{stage}.") and k.split(".")[1].isdigit()}
        counts.append(len(indices))
    bottleneck = any(k.startswith("layer1.0.conv3.") for k in keys)
    return _TORCHVISION_DEPTHS.get((bottleneck, tuple(counts)), f"ResNet with {counts} blocks per stage")


def _classify(path: Path, tensors: Mapping[str, torch.Tensor]) -> tuple[FileKind, str]:
    if "conv1a.weight" in tensors or any(k.startswith(("b2.", "b7.", "bn7.")) for k in tensors):
        if "f9.weight" in tensors or "f8_3.weight" in tensors:
            return "seam", "ResNet38"
        return ("mlps" if "fc8.weight" in tensors else "resnet38"), "ResNet38"
    if "conv1.weight" in tensors and any(k.startswith("layer1.") for k in tensors):
        return "torchvision", _torchvision_family(list(tensors))
    raise WeightsError(
        path,
        f"holds neither ResNet38 nor torchvision ResNet weights (its keys start {_listing(list(tensors))})",
        _SUPPORTED,
    )


def read_weights_file(path: str | os.PathLike[str]) -> WeightsFile:
    """Read a local weights file (MXNet ``.params`` or PyTorch state dict) into reference-layout tensors.

    The format is told from the content: MXNet's NDArray header, else ``torch.load(weights_only=True)``.

    Raises:
        WeightsError: the file is missing, a folder, truncated or corrupt, refused by ``weights_only`` loading,
            a histo-daen checkpoint, or holds weights of no supported network.
    """
    source = Path(path)
    require_file(source, _WEIGHTS_FILE)
    if is_mxnet_params(source) or source.suffix == ".params":
        arrays = read_mxnet_params(source)
        tensors: dict[str, torch.Tensor] = {}
        dropped, unrecognised = [], []
        for name, array in arrays.items():
            try:
                key = mxnet_to_seam_key(name)
            except KeyError:
                unrecognised.append(name)
                continue
            if key is None:
                dropped.append(name)
            else:
                tensors[key] = torch.from_numpy(np.ascontiguousarray(array))
        if not tensors:
            raise WeightsError(
                source, f"is an MXNet file without ResNet38 parameters (names {_listing(list(arrays))})", _SUPPORTED
            )
        return WeightsFile(
            source, "mxnet", tensors, "ResNet38", tuple(dropped), tuple(unrecognised), meta=_KIND_META["mxnet"]
        )
    loaded = safe_torch_load(source, _WEIGHTS_FILE)
    tensors = _unwrap_state_dict(source, loaded)
    kind, family = _classify(source, tensors)
    if _is_histo_daen_checkpoint(loaded):
        return WeightsFile(source, "histo-daen", tensors, family, meta=_histo_daen_meta(loaded))
    return WeightsFile(source, kind, tensors, family, meta=_KIND_META[kind])


# ---------------------------------------------------------------------------------------------------------------
# Loading into a model


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        path: the weights file.
        file_kind: what the file held (see :class:`WeightsFile`).
        description: the same in words.
        loaded: model state-dict keys whose values now come from the file (BatchNorm's ``num_batches_tracked``
            counters, which SEAM-era files may lack, are loaded when present but not listed).
        left_at_init: model keys the file did not provide (new heads such as ``fc8``, the CSM), model order.
        ignored: file keys not used: an ImageNet classifier (``fc.*``, ``linear1000_*``), SEAM heads the model does
            not have (PCM layers for ``cam``), and with ``strict=False`` whatever did not fit.
    """

    path: Path
    file_kind: FileKind
    description: str
    loaded: tuple[str, ...]
    left_at_init: tuple[str, ...]
    ignored: tuple[str, ...]

    @property
    def ignored_layers(self) -> tuple[str, ...]:
        """The top-level layers of :attr:`ignored` (``("f8_3", "f8_4", "f9")``, ``("linear1000",)``)."""
        return tuple(_layer_names(self.ignored))

    def summary(self) -> str:
        """One line: counts and the layers by name, e.g. for the CLI or a log."""
        text = f"{len(self.loaded)} tensors from {self.path.name}, {self.description}"
        if self.left_at_init:
            text += f"; left at initialisation: {', '.join(_layer_names(self.left_at_init))}"
        if self.ignored:
            text += f"; not used: {', '.join(self.ignored_layers)}"
        return text


def _listing(items: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _layer_name(key: str) -> str:
    """``fc8.weight`` -> ``fc8``; an MXNet name ``arg:linear1000_weight`` -> ``linear1000``."""
    if "." in key:
        return key.split(".")[0]
    return key.split(":")[-1].rsplit("_", 1)[0]


def _layer_names(keys: Sequence[str]) -> list[str]:
    """Keys grouped to their top-level layers, in first-seen order."""
    return list(dict.fromkeys(_layer_name(key) for key in keys))


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _model_family(model: CamNet, keys: Sequence[str]) -> str:
    if "conv1a.weight" in keys:
        return "ResNet38"
    if "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys):
        return _torchvision_family(keys)
    raise TypeError(f"{type(model).__name__} has neither a ResNet38 nor a torchvision ResNet backbone")


def _backbone_keys(model: CamNet, keys: Sequence[str]) -> list[str]:
    """The keys of ``keys`` that belong to the model's backbone (its layers are the model's own children)."""
    layers = {name for name, _ in model.backbone.named_children()}
    return [k for k in keys if k.split(".")[0] in layers]


def _model_name(model: CamNet) -> str:
    return f"backbone={model.config.backbone}, width={model.config.width}"


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def load_pretrained(model: CamNet, path: str | os.PathLike[str], *, strict: bool = True) -> LoadReport:
    """Load local pretrained weights into a network from ``build_model``, in place.

    Args:
        model: the network from ``build_model`` (a :class:`~histo_daen.models.CamNet`).
        path: the weights file: MXNet ``.params``, a PyTorch ``.pth``, or for timm backbones also ``.safetensors``
            (see the module docstring for the list).
        strict: require the whole backbone and every file tensor to fit (module docstring); ``False`` loads what
            fits and lists the rest in the report. Backbone tensors of the wrong shape are refused either way.

    Returns:
        A :class:`LoadReport` (also logged at info level).

    Raises:
        WeightsError: unreadable file (missing, truncated, random bytes, a pickle ``weights_only=True`` refuses),
            weights of another backbone or width, missing or unexpected keys, shapes that differ, non-finite values.
            The message names the file, the keys and what was expected.
    """
    if isinstance(model.backbone, TimmBackbone):
        return _load_timm(model, model.backbone, Path(path), strict=strict)
    weights = read_weights_file(path)
    if weights.kind == "histo-daen":
        logger.info("%s: taking the backbone of a histo-daen checkpoint", weights.path)
    return _load_into(model, weights, strict=strict)


# ---------------------------------------------------------------------------------------------------------------
# timm backbones

# Hugging Face transformers' ViT / DINOv2 layout (Phikon, Phikon-v2): not timm's key names.
_TRANSFORMERS_KEYS = ("embeddings.patch_embeddings.projection.weight", "vit.embeddings.patch_embeddings")


def _read_timm_tensors(path: Path) -> dict[str, torch.Tensor]:
    """``{key: tensor}`` of a local timm weights file: safetensors, or a state dict read with weights_only=True."""
    require_file(path, _WEIGHTS_FILE)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise WeightsError(path, f"is not a readable safetensors file ({err})", "The file is damaged.") from err
        tensors = strip_wrapper_prefixes(tensors)
    else:
        loaded = safe_torch_load(path, _WEIGHTS_FILE)
        tensors = _unwrap_state_dict(path, loaded)
        if _is_histo_daen_checkpoint(loaded):  # one of our checkpoints lends its timm encoder, not its heads
            tensors = {key: value for key, value in tensors.items() if key.startswith("encoder.")}
    if tensors and all(key.startswith("encoder.") for key in tensors):
        tensors = {key.removeprefix("encoder."): value for key, value in tensors.items()}  # one of our checkpoints
    if any(marker in key for key in tensors for marker in _TRANSFORMERS_KEYS):
        raise WeightsError(
            path,
            "holds a Hugging Face transformers model (keys like embeddings.patch_embeddings.projection.weight), "
            "not timm's layout",
            "Use the timm release of these weights (a timm model's pytorch_model.bin or model.safetensors).",
        )
    return tensors


def _as_triple(values: Any) -> tuple[float, float, float] | None:
    if isinstance(values, Sequence) and len(values) == 3 and all(isinstance(v, int | float) for v in values):
        return (float(values[0]), float(values[1]), float(values[2]))
    return None


def _check_timm_metadata(model: CamNet, backbone: TimmBackbone, path: Path) -> None:
    """Compare the model with the ``config.json`` timm keeps beside published weights (architecture, input mean and
    std, input size); a mismatch that would silently degrade the features is an error naming the fix."""
    import json

    sidecar = path.with_name("config.json")
    if not sidecar.is_file():
        return
    try:
        metadata = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        logger.warning("%s: not read (%s); the weights' input settings are not checked", sidecar, err)
        return
    if not isinstance(metadata, Mapping) or "architecture" not in metadata:
        return  # not timm's layout (e.g. a transformers config)
    architecture = str(metadata["architecture"])
    if architecture.split(".")[0] != backbone.timm_name.split(".")[0]:
        raise WeightsError(
            path,
            f"is for timm:{architecture} ({sidecar.name} beside it says so), not timm:{backbone.timm_name}",
            f"Pass --backbone timm:{architecture}.",
        )
    pretrained_cfg = metadata.get("pretrained_cfg", {})
    mean, std = _as_triple(pretrained_cfg.get("mean")), _as_triple(pretrained_cfg.get("std"))
    config = model.config
    if mean is not None and std is not None:
        expected = {
            "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
            "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
            "custom": (config.input_mean, config.input_std),
        }[config.input_normalisation]
        close = all(
            ours is not None and all(abs(a - b) < 1e-4 for a, b in zip(ours, theirs, strict=True))
            for ours, theirs in zip(expected, (mean, std), strict=True)
        )
        if not close:
            imagenet = all(
                abs(a - b) < 1e-4 for a, b in zip((*mean, *std), (*IMAGENET_MEAN, *IMAGENET_STD), strict=True)
            )
            fix = (
                "model.input_normalisation=imagenet"
                if imagenet
                else f"model.input_normalisation=custom model.input_mean=[{', '.join(f'{v:g}' for v in mean)}] "
                f"model.input_std=[{', '.join(f'{v:g}' for v in std)}]"
            )
            raise WeightsError(
                path,
                f"was trained on input normalised with mean {list(mean)} and std {list(std)} ({sidecar.name}), but "
                f"the model normalises with {config.input_normalisation} statistics",
                f"Pass {fix}.",
            )
    input_size = pretrained_cfg.get("input_size")
    if isinstance(input_size, Sequence) and len(input_size) == 3 and int(input_size[-1]) != config.input_size:
        logger.warning(
            "%s: trained on %d px inputs (%s), the model reads %d px patches (model.input_size)",
            path.name,
            int(input_size[-1]),
            sidecar.name,
            config.input_size,
        )


def _load_timm(model: CamNet, backbone: TimmBackbone, path: Path, *, strict: bool) -> LoadReport:
    """Load a timm state dict into a timm backbone's encoder; the CAM heads stay at their initialisation."""
    import sys

    encoder = backbone.encoder
    tensors = _read_timm_tensors(path)
    _check_timm_metadata(model, backbone, path)
    convert = getattr(sys.modules[type(encoder).__module__], "checkpoint_filter_fn", None)
    if convert is not None:
        # timm's own conversion for its model family: resamples a ViT's position embeddings to the model's grid,
        # rewrites original releases (DINOv2, ...) into timm's names.
        try:
            tensors = convert(dict(tensors), encoder)
        except (KeyError, RuntimeError, ValueError) as err:
            raise WeightsError(
                path, f"cannot be converted for timm:{backbone.timm_name} ({type(err).__name__}: {err})", ""
            ) from err
    own = encoder.state_dict()
    used_layers = {name for name, module in encoder.named_children() if any(True for _ in module.state_dict())}
    selected: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    unexpected: list[str] = []
    shapes: list[str] = []
    for key, tensor in tensors.items():
        if key in own:
            if _shape(tensor) != _shape(own[key]):
                shapes.append(f"{key} {_shape(tensor)} in the file, {_shape(own[key])} in the model")
            else:
                selected[key] = tensor
        elif key.split(".")[0] not in used_layers and "." in key:
            ignored.append(key)  # a classifier or head the features never reach (pruned / Identity)
        else:
            unexpected.append(key)
    name = f"timm:{backbone.timm_name}"
    if shapes:
        raise WeightsError(
            path,
            f"has tensors of other shapes than {name}: {_listing(shapes, 3)}",
            "Pass the weights of this architecture (and the model.timm_args they were trained with).",
        )
    missing = [key for key in own if key not in selected and not _is_counter(key)]
    if strict and (missing or unexpected):
        problems = []
        if missing:
            problems.append(f"lacks {len(missing)} of the {len(own)} tensors of {name}: {_listing(missing)}")
        if unexpected:
            problems.append(f"has keys {name} does not: {_listing(unexpected)}")
        raise WeightsError(
            path,
            "; ".join(problems),
            "Name the architecture these weights are for (--backbone timm:<name>) with the arguments they need "
            "(model.timm_args, e.g. init_values=1e-5 for UNI).",
        )
    ignored += unexpected
    non_finite = [k for k, t in selected.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if non_finite:
        raise WeightsError(path, f"holds NaN or infinite values in {_listing(non_finite)}", "The file is damaged.")
    encoder.load_state_dict(selected, strict=False)
    loaded = {f"encoder.{key}" for key in selected}
    model_keys = list(model.state_dict())
    report = LoadReport(
        path=path,
        file_kind="timm",
        description=f"{_KIND_NAMES['timm']} for {name}",
        loaded=tuple(k for k in model_keys if k in loaded and not _is_counter(k)),
        left_at_init=tuple(k for k in model_keys if k not in loaded and not _is_counter(k)),
        ignored=tuple(ignored),
    )
    logger.info("loaded %s", report.summary())
    return report


def _load_into(model: CamNet, weights: WeightsFile, *, strict: bool) -> LoadReport:
    source = weights.path
    own = model.state_dict()
    own_keys = list(own)
    family = _model_family(model, own_keys)
    if weights.family != family:
        raise WeightsError(
            source,
            f"holds {weights.description}, but the model's backbone is {family} ({_model_name(model)})",
            "Pass weights for that backbone, or build the model with the backbone these weights are for.",
        )
    if strict and weights.unrecognised:
        raise WeightsError(
            source, f"has parameters that are not in ResNet38: {_listing(list(weights.unrecognised))}", _SUPPORTED
        )
    backbone = set(_backbone_keys(model, own_keys))
    selected: dict[str, torch.Tensor] = {}
    ignored: list[str] = [*weights.dropped, *weights.unrecognised]
    unexpected: list[str] = []
    backbone_shapes: list[str] = []
    head_shapes: list[str] = []
    for key, tensor in weights.tensors.items():
        layer = key.split(".")[0]
        if weights.kind == "histo-daen" and key not in backbone:
            ignored.append(key)  # one of our checkpoints lends its backbone; its heads are another model's
        elif layer in _IMAGENET_CLASSIFIERS or (layer in _REFERENCE_HEADS and key not in own):
            ignored.append(key)
        elif key not in own:
            unexpected.append(key)
        elif _shape(tensor) != _shape(own[key]):
            described = f"{key} {_shape(tensor)} in the file, {_shape(own[key])} in the model"
            (backbone_shapes if key in backbone else head_shapes).append(described)
        else:
            selected[key] = tensor
    if backbone_shapes:
        raise WeightsError(
            source,
            f"has backbone tensors of other shapes than the model ({_model_name(model)}): "
            f"{_listing(backbone_shapes, 3)}",
            "Weights fit only the network they were made for; published ResNet38 weights need width=1.0.",
        )
    missing = [k for k in own_keys if k in backbone and k not in selected and not _is_counter(k)]
    if strict and (unexpected or head_shapes or missing):
        problems = []
        if missing:
            problems.append(
                f"lacks {len(missing)} of the model's {len(backbone)} backbone tensors: {_listing(missing)}"
            )
        if unexpected:
            problems.append(f"has keys the model does not: {_listing(unexpected)}")
        if head_shapes:
            problems.append(f"has heads of other shapes: {_listing(head_shapes, 3)}")
        raise WeightsError(
            source,
            "; ".join(problems),
            "To take a checkpoint with its own classes use histo-daen import-checkpoint; strict=False loads what fits.",
        )
    ignored += unexpected + [entry.split(" ")[0] for entry in head_shapes]
    non_finite = [k for k, t in selected.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if non_finite:
        raise WeightsError(source, f"holds NaN or infinite values in {_listing(non_finite)}", "The file is damaged.")
    model.load_state_dict(selected, strict=False)
    trained_on = weights.meta.input_normalisation
    if trained_on is not None and trained_on != model.config.input_normalisation:
        logger.warning(
            "%s: these weights were trained on %s input; this model's input_normalisation is %r "
            "(build it with input_normalisation=%r to match)",
            source,
            "un-normalised [0, 1]" if trained_on == "none" else f"{trained_on}-normalised",
            model.config.input_normalisation,
            trained_on,
        )
    report = LoadReport(
        path=source,
        file_kind=weights.kind,
        description=weights.description,
        loaded=tuple(k for k in own_keys if k in selected and not _is_counter(k)),
        left_at_init=tuple(k for k in own_keys if k not in selected and not _is_counter(k)),
        ignored=tuple(ignored),
    )
    logger.info("loaded %s", report.summary())
    return report


# ---------------------------------------------------------------------------------------------------------------
# Importing reference checkpoints


@dataclass(frozen=True)
class ImportedCheckpoint:
    """The result of :func:`import_reference_checkpoint`.

    Attributes:
        output: the histo-daen checkpoint written.
        source_kind: ``"seam"`` or ``"mlps"``.
        model_config: the config the checkpoint rebuilds its model from.
        classes: class names in CAM-channel order (foreground only).
        class_set: the histo-daen class set these names are (``"luad"``, ``"bcss"``), or None (e.g. VOC classes:
            the model config then says ``class_set="custom"``, and evaluate/segment cannot use the checkpoint).
        report: what was loaded, and what was not carried over (``report.ignored``).
    """

    output: Path
    source_kind: FileKind
    model_config: ModelConfig
    classes: tuple[str, ...]
    class_set: str | None
    report: LoadReport


def _class_names(classes: str | Sequence[str]) -> tuple[tuple[str, ...], str | None]:
    """``"luad"`` / ``"TE,NEC,LYM,TAS"`` / a sequence -> (names, the matching class-set name or None)."""
    if isinstance(classes, str):
        if classes in class_set_names():
            return class_set(classes).codes, classes
        names = tuple(part.strip() for part in classes.split(","))
    else:
        names = tuple(str(part).strip() for part in classes)
    if not names or not all(names):
        raise ConfigError(f"classes: {classes!r} has an empty name; give NAME,NAME,... or one of {class_set_names()}")
    if len(set(names)) != len(names):
        raise ConfigError(f"classes: {classes!r} names a class twice")
    for name in class_set_names():
        if class_set(name).codes == names:
            return names, name
    return names, None


def import_reference_checkpoint(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    classes: str | Sequence[str] | None,
    variant: Literal["auto", "seam", "cam"] = "auto",
    input_normalisation: Literal["auto", "imagenet", "none"] = "auto",
    overwrite: bool = False,
) -> ImportedCheckpoint:
    """Turn a SEAM or MLPS stage-1 checkpoint into a histo-daen checkpoint (config, classes, source recorded).

    SEAM (YudeWang/SEAM ``train_SEAM.py``) saves ResNet38 + ``fc8`` (channel 0 = background, then the classes,
    e.g. VOC's 1 + 20) + PCM ``f8_3``/``f8_4``/``f9``; MLPS stage 1 (ChuHan89/WSSS-Tissue) saves ResNet38 + a
    ``fc8`` of the classes only (4 for LUAD/BCSS), no PCM. The model config follows from the file: backbone
    resnet38 at the width of its ``conv1a``, ``background_channel`` True for SEAM and False for MLPS, and
    ``input_normalisation`` as each code trained (SEAM: ImageNet statistics; MLPS: none).

    Args:
        source: the reference checkpoint (``.pth``; ``module.`` prefixes accepted).
        output: the histo-daen checkpoint to write (``.pt``), atomically.
        classes: a class-set name (``"luad"``, ``"bcss"``) or the foreground class names in fc8 order, as a
            comma-separated string or a sequence; their number must match the file's classifier. Required (None is
            refused): a 4-class MLPS checkpoint may be LUAD's TE/NEC/LYM/TAS or BCSS's TUM/STR/LYM/NEC.
        variant: ``"seam"`` (needs the PCM layers), ``"cam"`` (drops them if present) or ``"auto"``: ``"seam"``
            for SEAM files, ``"cam"`` for MLPS files.
        input_normalisation: what the model does to its [0, 1] input; ``"auto"``: as the source code trained.
        overwrite: replace an existing ``output``.

    Raises:
        WeightsError: the source is unreadable, not a SEAM/MLPS checkpoint, lacks keys (named), has keys no
            ResNet38 CAM network has (named), tensors of wrong shapes, or a class count that differs from
            ``classes``.
        ConfigError: ``classes`` or ``variant`` is malformed.
        OutputExistsError: ``output`` exists and ``overwrite`` is False.
    """
    if variant not in ("auto", "seam", "cam"):
        raise ConfigError(f"variant: {variant!r} cannot be imported; valid: auto, seam, cam")
    target = check_output(output, kind="file", overwrite=overwrite, inputs=(source,))
    weights = read_weights_file(source)
    path = weights.path
    if weights.kind == "histo-daen":
        classes_text = ", ".join(weights.meta.classes) if weights.meta.classes else "its classes"
        raise WeightsError(
            path,
            f"is already a histo-daen checkpoint ({classes_text}): there is nothing to import",
            "Pass it wherever a --checkpoint is taken (evaluate, segment); import-checkpoint converts SEAM and MLPS "
            "stage-1 checkpoints.",
        )
    if weights.kind not in ("seam", "mlps"):
        raise WeightsError(
            path,
            f"holds {weights.description}, not a trained SEAM or MLPS checkpoint with a classifier (fc8)",
            "Bare backbones are pretrained weights: pass them to training (load_pretrained), not to import.",
        )
    if classes is None:  # asked only now: a file that is not a SEAM/MLPS checkpoint is named as what it is first
        raise ConfigError(
            "classes: name the checkpoint's classes in fc8 order, e.g. --classes luad, --classes bcss or "
            "--classes NAME,NAME,..."
        )
    if variant == "auto":
        variant = "seam" if weights.kind == "seam" else "cam"
    if variant == "seam" and weights.kind == "mlps":
        raise WeightsError(
            path,
            f"has no PCM layers ({', '.join(_PCM_LAYERS)}): it is an MLPS stage-1 checkpoint",
            "Import it as --variant cam.",
        )
    names, set_name = _class_names(classes)
    background = weights.kind == "seam"
    fc8 = weights.tensors.get("fc8.weight")
    if fc8 is None:
        raise WeightsError(path, "lacks fc8.weight, the CAM classifier", "The file is incomplete.")
    if fc8.ndim != 4 or fc8.shape[2:] != (1, 1):
        raise WeightsError(path, f"has an fc8.weight of shape {_shape(fc8)}, not a 1x1 conv", "The file is damaged.")
    foreground = fc8.shape[0] - 1 if background else fc8.shape[0]
    if foreground != len(names):
        layout = f"background + {foreground} classes" if background else f"{foreground} classes"
        raise WeightsError(
            path,
            f"has an fc8 with {fc8.shape[0]} outputs ({layout}), but {len(names)} class names were given "
            f"({', '.join(names)})",
            f"Name its {foreground} foreground classes in fc8 order with --classes.",
        )
    stem = weights.tensors.get("conv1a.weight")
    if stem is None:
        raise WeightsError(path, "lacks conv1a.weight, the first ResNet38 layer", "The file is incomplete.")
    model_config = config_from_mapping(
        ModelConfig,
        {
            "variant": variant,
            "backbone": "resnet38",
            "width": stem.shape[0] / 64,  # reference checkpoints are width 1 (64 channels)
            "num_classes": foreground,
            "class_set": set_name or "custom",
            "background_channel": background,
            # "auto": as the source code trained (the file kind's metadata: SEAM imagenet, MLPS none).
            "input_normalisation": (
                weights.meta.input_normalisation if input_normalisation == "auto" else input_normalisation
            ),
        },
        "import",
    )
    model = build_model(model_config)
    report = _load_into(model, weights, strict=True)
    if report.left_at_init:
        raise WeightsError(
            path, f"lacks {len(report.left_at_init)} tensors of the model: {_listing(list(report.left_at_init))}", ""
        )
    state = checkpoint_state(
        model,
        model_config=model_config,
        classes=names,
        source={
            "kind": weights.kind,
            "description": weights.description,
            "file": path.name,
            "path": str(path.resolve()),
            "sha256": file_sha256(path),
            "tensors_loaded": len(report.loaded),
            "not_carried_over": list(report.ignored_layers),
        },
    )
    save_checkpoint(target, state)
    if set_name is None:
        logger.warning(
            "%s: the classes %s are not a histo-daen class set (%s): the checkpoint computes CAMs (load_model), "
            "but evaluate and segment need the classes of a class set",
            target,
            ", ".join(names),
            ", ".join(class_set_names()),
        )
    return ImportedCheckpoint(target, weights.kind, model_config, names, set_name, report)
