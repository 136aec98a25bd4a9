"""histo-daen checkpoints: written atomically, read with ``torch.load(weights_only=True)``, checked field by field.

A checkpoint is one ``torch.save``d dict of tensors and plain Python values (str, int, float, bool, None, and
lists/tuples/dicts of them), nothing else, so ``weights_only=True`` can read it:

==========================  ===============================================================================
key                         value
==========================  ===============================================================================
``format_version``          int, :data:`FORMAT_VERSION` of the writer; a reader refuses a newer one
``histo_daen_version``      str, the package version that wrote it
``model_config``            dict, :class:`~histo_daen.config.ModelConfig` as plain values (rebuilds the model)
``config``                  dict, the whole run config (``{"model": model_config}`` when there is none)
``classes``                 list of str, class codes in CAM-channel order (``["TE", "NEC", "LYM", "TAS"]``)
``state_dict``              the unwrapped model's state dict (no ``module.`` / ``_orig_mod.`` prefixes)
``epoch``, ``step``         int, epochs and optimiser steps completed
optional                    ``optimizer``, ``scheduler``, ``rng``, ``metrics``, ``source`` (imported checkpoints), ...
==========================  ===============================================================================

The model is always rebuilt from the checkpoint's own ``model_config``; a caller that expects a particular
config gets a :class:`~histo_daen.errors.CheckpointError` listing every differing field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from histo_daen import __version__
from histo_daen.atomic import atomic_write
from histo_daen.classes import class_set
from histo_daen.config.load import config_from_mapping, to_plain_dict
from histo_daen.config.schema import ModelConfig
from histo_daen.errors import CheckpointError, ConfigError
from histo_daen.models.cam_net import CamNet
from histo_daen.models.registry import build_model
from histo_daen.models.safe_load import TorchFile, safe_torch_load
from histo_daen.provenance import require_same

__all__ = [
    "FORMAT_VERSION",
    "LoadedModel",
    "checkpoint_state",
    "load_model",
    "model_config_of",
    "non_finite_tensors",
    "peek_run_config",
    "read_checkpoint",
    "restore_weights",
    "save_checkpoint",
    "strip_wrapper_prefixes",
    "unwrap_model",
]

FORMAT_VERSION = 1
_REQUIRED_KEYS = ("format_version", "model_config", "classes", "state_dict", "epoch", "step")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


@dataclass(frozen=True)
class LoadedModel:
    """A network rebuilt from a checkpoint.

    Attributes:
        model: the network in eval mode, on the requested device.
        model_config: the checkpoint's model config.
        config: the whole run config stored with it (plain dict).
        classes: class codes in CAM-channel order.
        state: every checkpoint entry except ``state_dict`` (epoch, step, metrics, source, ...).
    """

    model: CamNet
    model_config: ModelConfig
    config: dict[str, Any]
    classes: tuple[str, ...]
    state: dict[str, Any]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel (``.module``) and torch.compile (``._orig_mod``)
    wrappers, however nested: what checkpoints store and weights load into. A bare model is returned as it is."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif isinstance(compiled := getattr(model, "_orig_mod", None), nn.Module):
            model = compiled
        else:
            return model


def strip_wrapper_prefixes(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """State-dict keys without the ``module.`` / ``_orig_mod.`` prefixes that wrappers add (repeatedly)."""
    stripped = {}
    for key, value in state_dict.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        stripped[key] = value
    return stripped


def non_finite_tensors(state_dict: Mapping[str, Any]) -> list[str]:
    """Keys of the floating-point tensors holding a NaN or an infinity (a diverged run's weights)."""
    return [
        key
        for key, value in state_dict.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def _listed(keys: list[str], total: int) -> str:
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return f"{', '.join(keys[:3])}{more}: {len(keys)} of {total} tensors"


def _plain_config(value: Any) -> dict[str, Any]:
    return to_plain_dict(value) if is_dataclass(value) and not isinstance(value, type) else dict(value)


def checkpoint_state(
    model: nn.Module,
    *,
    model_config: ModelConfig | None = None,
    config: Any = None,
    classes: tuple[str, ...] | list[str] | None = None,
    epoch: int = 0,
    step: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """Assemble a checkpoint dict for :func:`save_checkpoint` from a (possibly wrapped) model.

    Args:
        model: the network, bare or wrapped in DDP / torch.compile.
        model_config: its config; default ``model.config`` (every :class:`CamNet` has one).
        config: the whole run config (a config dataclass or a plain dict); default ``{"model": model_config}``.
        classes: class codes; default the codes of ``model_config.class_set``.
        epoch, step: progress so far.
        **extra: further entries (``optimizer=opt.state_dict()``, ``rng=get_rng_state()``, ``source=...``), which
            must be tensors and plain values.
    """
    bare = unwrap_model(model)
    if model_config is None:
        if not isinstance(bare, CamNet):
            raise TypeError(f"a {type(bare).__name__} carries no ModelConfig; pass model_config=")
        model_config = bare.config
    if classes is None:
        classes = class_set(model_config.class_set).codes
    if len(classes) != model_config.num_classes:
        raise ValueError(f"{len(classes)} class names for a model with num_classes={model_config.num_classes}")
    plain_model_config = to_plain_dict(model_config)
    return {
        "model_config": plain_model_config,
        "config": _plain_config(config) if config is not None else {"model": plain_model_config},
        "classes": list(classes),
        "state_dict": strip_wrapper_prefixes(bare.state_dict()),
        "epoch": int(epoch),
        "step": int(step),
        **extra,
    }


def _check_plain(value: Any, where: str) -> None:
    """Refuse what ``weights_only=True`` would refuse at load time, naming the entry (a bug in the caller)."""
    if value is None or isinstance(value, str | int | float | bool | torch.Tensor | torch.Size | torch.dtype):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"checkpoint entry {where} has a key of type {type(key).__name__}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    raise TypeError(
        f"checkpoint entry {where} is a {type(value).__name__}; store tensors and plain values only "
        "(torch.load(weights_only=True) refuses anything else)"
    )


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write a checkpoint atomically: readers see the previous file or the complete new one, never half.

    Args:
        path: the ``.pt`` file to write (its folder is created).
        state: as from :func:`checkpoint_state`: ``model_config`` (ModelConfig or plain dict), ``classes``,
            ``state_dict``, ``epoch``, ``step``, optionally ``config`` and further plain entries.
            ``format_version`` and ``histo_daen_version`` are set here.

    Returns:
        The path written.

    Raises:
        KeyError: a required entry is missing. TypeError: an entry is not a tensor or plain value.
        CheckpointError: a weight holds NaN or inf (nothing is written).
    """
    missing = [key for key in _REQUIRED_KEYS if key not in state and key != "format_version"]
    if missing:
        raise KeyError(f"checkpoint state lacks {', '.join(missing)}")
    payload = dict(state)
    payload["model_config"] = _plain_config(payload["model_config"])
    payload["config"] = _plain_config(payload.get("config") or {"model": payload["model_config"]})
    payload["classes"] = list(payload["classes"])
    payload["state_dict"] = strip_wrapper_prefixes(payload["state_dict"])
    payload["format_version"] = FORMAT_VERSION
    payload["histo_daen_version"] = __version__
    for key, value in payload.items():
        _check_plain(value, key)
    broken = non_finite_tensors(payload["state_dict"])
    if broken:
        raise CheckpointError(
            path,
            f"was not written: the weights hold NaN or inf ({_listed(broken, len(payload['state_dict']))})",
            "The previous file, if any, is unchanged. The run diverged: lower the learning rate.",
        )
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


_CHECKPOINT_FILE = TorchFile(
    noun="checkpoint file", error=CheckpointError, expected="Pass a .pt file written by histo-daen, e.g. <run>/last.pt."
)


def _is_bare_state_dict(loaded: Any) -> bool:
    return isinstance(loaded, Mapping) and bool(loaded) and all(isinstance(v, torch.Tensor) for v in loaded.values())


def peek_run_config(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run config stored in a histo-daen checkpoint, or None for any other file (weights, unreadable files).

    For decisions made before a model exists (the training recipe of a run started from this checkpoint); the
    loader that reads the file next reports what is wrong with one that cannot be read.

    Returns:
        The ``config`` dict (with ``model`` at least) or None.
    """
    try:
        loaded = safe_torch_load(Path(path), _CHECKPOINT_FILE)
    except CheckpointError:
        return None
    if not isinstance(loaded, Mapping) or "format_version" not in loaded:
        return None
    config = loaded.get("config")
    config = dict(config) if isinstance(config, Mapping) else {}
    if not isinstance(config.get("model"), Mapping) and isinstance(loaded.get("model_config"), Mapping):
        config["model"] = dict(loaded["model_config"])
    return config


def read_checkpoint(path: str | os.PathLike[str], *, expected_model: ModelConfig | None = None) -> dict[str, Any]:
    """Read and validate a histo-daen checkpoint (``weights_only=True``, tensors on the CPU).

    Args:
        path: the checkpoint file.
        expected_model: when given, the checkpoint's model config must equal it field for field (the choices it
            leaves to the training start, null, accept the checkpoint's).

    Returns:
        The checkpoint dict (see the module docstring), ``model_config`` and ``config`` as plain dicts.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, not a histo-daen checkpoint (e.g. a bare state
            dict), refused by ``weights_only`` loading, from a newer format, or made with another model config
            (every differing field is named with its stored and requested values).
    """
    source = Path(path)
    loaded = safe_torch_load(source, _CHECKPOINT_FILE)
    if _is_bare_state_dict(loaded):
        raise CheckpointError(
            source,
            "holds a bare state dict (weights without a histo-daen model config)",
            "Load it into a model built from your config with histo_daen.models.load_pretrained.",
        )
    if not isinstance(loaded, dict) or not all(key in loaded for key in _REQUIRED_KEYS):
        found = ", ".join(map(str, list(loaded)[:8])) if isinstance(loaded, dict) else type(loaded).__name__
        raise CheckpointError(
            source,
            f"is not a histo-daen checkpoint (needs {', '.join(_REQUIRED_KEYS)}; found {found})",
            "Pass a checkpoint written by histo-daen train, or load bare weights with load_pretrained.",
        )
    version = loaded["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(source, f"has an invalid format_version {version!r}", "The file is damaged.")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            source,
            f"was written by a newer histo-daen ({loaded.get('histo_daen_version', '?')}, checkpoint format "
            f"{version}; this version {__version__} reads up to format {FORMAT_VERSION})",
            "Upgrade histo-daen to load it.",
        )
    stored = model_config_of(loaded, source)
    if expected_model is not None:
        require_same(
            to_plain_dict(stored),
            to_plain_dict(expected_model.with_choices_of(stored)),
            path=source,
            subject="was made with another model config",
            hint="Drop the conflicting options: the checkpoint's own model config is used to rebuild the model.",
            error=CheckpointError,
        )
    return loaded


def model_config_of(checkpoint: Mapping[str, Any], path: str | os.PathLike[str]) -> ModelConfig:
    """The :class:`ModelConfig` stored in a checkpoint dict; fields it predates take today's defaults."""
    raw = checkpoint.get("model_config")
    if not isinstance(raw, Mapping):
        raise CheckpointError(
            path, "has no model_config mapping", "The file is damaged or not a histo-daen checkpoint."
        )
    try:
        return config_from_mapping(ModelConfig, raw, "model_config")
    except ConfigError as err:
        raise CheckpointError(
            path, f"holds a model config this version cannot use ({err})", "It was written by another histo-daen."
        ) from err


def restore_weights(model: nn.Module, checkpoint: Mapping[str, Any], *, path: str | os.PathLike[str]) -> None:
    """Load a checkpoint's ``state_dict`` into ``model`` (bare or wrapped), strictly, with errors naming the file.

    Raises:
        CheckpointError: keys are missing or unexpected, a tensor's shape differs (first few listed), or weights hold
            NaN or inf.
    """
    target = unwrap_model(model)
    state_dict = strip_wrapper_prefixes(checkpoint["state_dict"])
    broken = non_finite_tensors(state_dict)
    if broken:
        raise CheckpointError(
            path,
            f"holds weights with NaN or inf ({_listed(broken, len(state_dict))}): the run that wrote it diverged",
            "Use an earlier checkpoint, or train again with a lower learning rate.",
        )
    own = target.state_dict()
    missing = [key for key in own if key not in state_dict]
    unexpected = [key for key in state_dict if key not in own]
    mismatched = [
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}"
        for key in own
        if key in state_dict and isinstance(state_dict[key], torch.Tensor) and state_dict[key].shape != own[key].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{label}: {', '.join(items[:3])}{more}")
        raise CheckpointError(
            path, f"has weights that do not fit its model config ({'; '.join(parts)})", "The file is damaged."
        )
    target.load_state_dict(state_dict)


def load_model(
    path: str | os.PathLike[str], *, device: torch.device | str = "cpu", expected: ModelConfig | None = None
) -> LoadedModel:
    """Rebuild a network from a checkpoint: its own model config, its weights, eval mode, on ``device``.

    Args:
        path: the checkpoint file.
        device: where the model goes (resolve ``"auto"`` first with ``histo_daen.devices.resolve_device``).
        expected: when given, the checkpoint's model config must equal it (see :func:`read_checkpoint`).

    Raises:
        CheckpointError: as :func:`read_checkpoint`, or the weights do not fit the stored config.
    """
    source = Path(path)
    checkpoint = read_checkpoint(source, expected_model=expected)
    model_config = model_config_of(checkpoint, source)
    classes = checkpoint["classes"]
    if not isinstance(classes, list | tuple) or len(classes) != model_config.num_classes:
        raise CheckpointError(
            source, f"lists classes {classes!r} for num_classes={model_config.num_classes}", "The file is damaged."
        )
    model = build_model(model_config)
    restore_weights(model, checkpoint, path=source)
    model = model.to(torch.device(device)).eval()
    config = checkpoint.get("config")
    return LoadedModel(
        model=model,
        model_config=model_config,
        config=dict(config) if isinstance(config, Mapping) else {"model": checkpoint["model_config"]},
        classes=tuple(str(c) for c in classes),
        state={key: value for key, value in checkpoint.items() if key != "state_dict"},
    )
