"""Resolve a device name once, at the entry point; library code takes the device as an argument."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from histo_daen.errors import ConfigError
from histo_daen.torchrun import ProcessPlace, process_place

__all__ = ["AutocastSettings", "autocast_settings", "place_device", "process_device", "resolve_device"]


def resolve_device(spec: str = "auto") -> torch.device:
    """``"auto"`` (CUDA if present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> a usable device."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise ConfigError(f"device {spec!r} is not a device name; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {spec!r} was asked for but this machine has no usable CUDA GPU; use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type != "cpu":
        raise ConfigError(f"device {spec!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def place_device(device: torch.device, place: ProcessPlace) -> torch.device:
    """Under torchrun, an unnumbered CUDA device is this process's own GPU, ``cuda:LOCAL_RANK``; else ``device``."""
    if device.type == "cuda" and device.index is None and place.under_torchrun:
        return torch.device("cuda", place.local_rank)
    return device


def process_device(spec: str | torch.device = "auto", place: ProcessPlace | None = None) -> torch.device:
    """The device this process works on: :func:`resolve_device`, then one GPU per torchrun process.

    What every job calls at its entry: ``"auto"`` or ``"cuda"`` under ``torchrun --nproc_per_node=4`` gives each
    process its own ``cuda:LOCAL_RANK`` (so four processes do not share one GPU); an explicit ``cuda:N`` is kept.
    """
    device = resolve_device(spec) if isinstance(spec, str) else spec
    return place_device(device, process_place() if place is None else place)


@dataclass(frozen=True)
class AutocastSettings:
    """Arguments for ``torch.autocast(**settings.kwargs)``: bf16 on CUDA; on CPU only when asked for."""

    device_type: str
    dtype: torch.dtype
    enabled: bool

    @property
    def kwargs(self) -> dict[str, object]:
        return {"device_type": self.device_type, "dtype": self.dtype, "enabled": self.enabled}


def autocast_settings(device: torch.device, *, amp: bool = True, cpu_bf16: bool = False) -> AutocastSettings:
    """bf16 autocast on CUDA when ``amp``; on CPU when ``amp`` and ``cpu_bf16``.

    Off on CPU by default: its speed depends on the processor. With native bf16 (AVX512-BF16 or AMX) it halves the
    time of a ResNet-50 forward or training step (measured on the project's AMD EPYC with AVX512-BF16:
    ``benchmarks/bench_models.py --modes fp32 bf16``); CPUs that emulate bf16 may be slower (not measured). Results
    then differ from float32 runs by bf16 rounding (about 3 significant digits in activations).
    """
    enabled = amp and (device.type == "cuda" or (device.type == "cpu" and cpu_bf16))
    return AutocastSettings(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
