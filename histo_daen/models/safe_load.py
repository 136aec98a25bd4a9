"""The one ``torch.load``: ``weights_only=True``, every failure a :class:`~histo_daen.errors.PathError` in words.

Checkpoints (:mod:`histo_daen.models.checkpoint`) and pretrained weights (:mod:`histo_daen.models.weights`) both
read files through :func:`safe_torch_load`; only the noun, the error class and the "what to pass" hint differ
(:class:`TorchFile`). A file that ``weights_only`` refuses is told apart from a damaged one by asking torch which
globals it would refuse (``torch.serialization.get_unsafe_globals_in_checkpoint``, zip archives) or by listing
the globals of a plain pickle (older ``torch.save`` format, other tools), never by matching torch's messages,
whose wording changes between releases.
"""

from __future__ import annotations

import pickle
import pickletools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from histo_daen.errors import PathError

__all__ = ["TorchFile", "refused_globals", "require_file", "safe_torch_load"]

_ZIP_MAGIC = b"PK"
_PICKLE_MAGIC = b"\x80"  # pickle protocol 2 and later start with PROTO
_SCAN_LIMIT = 1 << 24  # a plain pickle's globals sit before its tensor bytes; 16 MiB covers every header seen
# Globals every torch.save pickle holds and weights_only reads (tensor rebuilding, ordered state dicts).
_ALWAYS_ALLOWED = ("torch.", "collections.OrderedDict")


@dataclass(frozen=True)
class TorchFile:
    """How a caller names its files in messages.

    Attributes:
        noun: what the file is, e.g. "checkpoint file" or "weights file".
        error: the :class:`~histo_daen.errors.PathError` subclass raised.
        expected: the hint for a file of the wrong kind, e.g. "Pass a .pt file written by histo-daen."
    """

    noun: str
    error: type[PathError]
    expected: str


_RESAVE_HINT = (
    "histo-daen reads only tensors and plain values; re-save just the weights where the file was made, e.g. "
    "torch.save(model.state_dict(), 'weights.pth'), then load them with histo_daen.models.load_pretrained."
)


def require_file(path: Path, kind: TorchFile) -> None:
    """Refuse a missing path, a folder or an empty file, naming it."""
    if not path.exists():
        raise kind.error(path, "does not exist", "Check the path; nothing is downloaded.")
    if path.is_dir():
        raise kind.error(path, f"is a folder, not a {kind.noun}", kind.expected)
    if path.stat().st_size == 0:
        raise kind.error(path, "is empty (0 bytes)", f"Use an earlier {kind.noun}; its write was interrupted.")


def _pickle_globals(path: Path) -> list[str]:
    """``module.name`` of every GLOBAL / STACK_GLOBAL in the consecutive pickles at the start of a file."""
    with open(path, "rb") as handle:
        data = handle.read(_SCAN_LIMIT)
    found: list[str] = []
    position = 0
    while position < len(data) and data[position : position + 1] == _PICKLE_MAGIC:
        strings: list[str] = []  # STACK_GLOBAL takes module and name from the two strings pushed before it
        try:
            for opcode, argument, offset in pickletools.genops(data[position:]):
                if opcode.name == "GLOBAL":
                    found.append(str(argument).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(argument, str) and "UNICODE" in opcode.name:
                    strings.append(argument)
                if opcode.name == "STOP":
                    position += (offset or 0) + 1
                    break
            else:
                break
        except (ValueError, pickle.UnpicklingError, IndexError):
            break  # the tensor bytes after the pickles (older torch.save format), or damage
    return list(dict.fromkeys(found))


def refused_globals(path: Path) -> list[str]:
    """The Python objects a ``weights_only`` load of ``path`` refuses (``[]`` for a clean or unreadable file)."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head.startswith(_ZIP_MAGIC):
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # damaged bytes raise any error here (an UnpicklingError for a bad opcode)
            return []  # safe_torch_load's own load then reports the damage
    allowed = {f"{obj.__module__}.{obj.__qualname__}" for obj in _user_safe_globals()}
    return [name for name in _pickle_globals(path) if not name.startswith(_ALWAYS_ALLOWED) and name not in allowed]


def _user_safe_globals() -> list[Any]:
    return [entry[0] if isinstance(entry, tuple) else entry for entry in torch.serialization.get_safe_globals()]


def safe_torch_load(path: str | Path, kind: TorchFile) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, with every failure one error of ``kind``.

    Raises:
        PathError (``kind.error``): the file is missing, a folder, empty, neither a zip archive nor a pickle,
            holds Python objects ``weights_only`` refuses (named), or is truncated or corrupt.
    """
    source = Path(path)
    require_file(source, kind)
    with open(source, "rb") as handle:
        head = handle.read(2)
    if not head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        raise kind.error(source, f"is not a PyTorch {kind.noun} (neither a zip archive nor a pickle)", kind.expected)
    refused = refused_globals(source)
    if refused:
        shown = ", ".join(refused[:4]) + (f" (+{len(refused) - 4} more)" if len(refused) > 4 else "")
        raise kind.error(
            source,
            f"holds Python objects ({shown}) that safe loading (torch.load with weights_only=True) refuses",
            _RESAVE_HINT,
        )
    try:
        with warnings.catch_warnings():
            # Pickles of other tools trigger a protocol warning before the failure reported below.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(source, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as err:
        # torch.load surfaces a damaged file as any of a dozen builtin errors (a random binary gives an IndexError,
        # a cut zip a RuntimeError, a plain pickle of another tool an UnpicklingError); to the user all mean one thing.
        first_line = str(err).splitlines()[0][:160] if str(err) else "no details"
        raise kind.error(
            source,
            f"is truncated or corrupt ({type(err).__name__}: {first_line})",
            f"Use an earlier {kind.noun}, or copy the file again. {kind.expected}",
        ) from err
