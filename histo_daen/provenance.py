""" "Same inputs as the stored run, or refuse naming the change": one rule, one message format, one slide identity.

Every output that can be resumed or reused records what made it (a tiling manifest, a tissue map, a checkpoint, a
training run). Before reusing it, the job compares that record with what it is asked to do now through
:func:`require_same`, which names each difference as ``key: stored X, requested Y``. What counts as "the same
slide" is :func:`slide_identity`: its content (file size, level-0 dimensions, a hash of its header and last bytes),
not its path or name, so a moved or renamed slide resumes and a rewritten one does not.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

from histo_daen.config.load import diff_configs
from histo_daen.errors import OutputExistsError, PathError

__all__ = ["SLIDE_IDENTITY_KEYS", "describe_changes", "differences", "require_same", "slide_identity"]

# What makes two slide files the same slide (keys of histo_daen.slide.Slide.identity()) ...
SLIDE_IDENTITY_KEYS = ("size_bytes", "dimensions", "header_sha256")
# ... and what Slide.identity() records only to describe it: where it is, what it is called, what it says.
_SLIDE_DESCRIPTION_KEYS = ("path", "name", "level_count", "mpp", "mpp_source", "vendor")
_SHOWN = 6  # differences named in one message; the rest are counted


def slide_identity(identity: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``Slide.identity()`` that says which slide it is: size, dimensions and header hash."""
    return {key: identity.get(key) for key in SLIDE_IDENTITY_KEYS}


def _comparable(record: Mapping[str, Any]) -> Mapping[str, Any]:
    slide = record.get("slide")
    if not isinstance(slide, Mapping):
        return record
    kept = {key: value for key, value in slide.items() if key not in _SLIDE_DESCRIPTION_KEYS}
    return {**record, "slide": kept | slide_identity(slide)}


def differences(
    stored: Mapping[str, Any], requested: Mapping[str, Any], *, ignore: Collection[str] = ()
) -> dict[str, tuple[Any, Any]]:
    """``{"section.key": (stored, requested)}`` for every differing leaf, except keys in ``ignore`` (or below).

    A top-level ``slide`` section (a ``Slide.identity()``, possibly with more facts such as the slide's bounds) is
    compared by :func:`slide_identity` and those further facts; its path, name, vendor and stated resolution only
    describe the file.
    """

    def ignored(key: str) -> bool:
        return any(key == name or key.startswith(f"{name}.") for name in ignore)

    changes = diff_configs(_comparable(stored), _comparable(requested))
    return {key: values for key, values in changes.items() if not ignored(key)}


def describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """``"tile_size: stored 128, requested 96; ..."``: the one wording of a difference, in key order."""
    items = sorted(changes.items())
    text = "; ".join(f"{key}: stored {old!r}, requested {new!r}" for key, (old, new) in items[:_SHOWN])
    return text + (f"; +{len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def require_same(
    stored: Mapping[str, Any],
    requested: Mapping[str, Any],
    *,
    path: str | os.PathLike[str],
    subject: str,
    hint: str,
    error: type[PathError] = OutputExistsError,
    ignore: Collection[str] = (),
) -> None:
    """Refuse to reuse ``path`` when its stored record differs from the requested one.

    Args:
        stored: the record kept with the output (JSON types; nested mappings compare key by key).
        requested: the record of the run asked for now, built the same way.
        path: the output or file the record belongs to (named first in the message).
        subject: what the difference means, e.g. "was tiled with other settings".
        hint: what to do, e.g. "Pass --overwrite to replace it, or choose another --output."
        error: the error class (``OutputExistsError`` for outputs, ``CheckpointError`` for checkpoints).
        ignore: dotted keys (or sections) allowed to differ, e.g. training settings that do not change results.

    Raises:
        ``error``: ``"<path>: <subject> (key: stored X, requested Y; ...). <hint>"``.
    """
    changes = differences(stored, requested, ignore=ignore)
    if changes:
        raise error(path, f"{subject} ({describe_changes(changes)})", hint)
