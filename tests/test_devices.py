"""Device choice and mixed precision: bf16 autocast on CUDA by default, on CPU only when asked for."""

from __future__ import annotations

import pytest
import torch

from histo_daen.devices import autocast_settings, resolve_device
from histo_daen.errors import ConfigError


@pytest.mark.parametrize(
    ("device", "amp", "cpu_bf16", "enabled"),
    [
        ("cuda", True, False, True),
        ("cuda", False, True, False),
        ("cpu", True, False, False),  # float32 on CPU unless asked: bf16 is slow on CPUs without native support
        ("cpu", True, True, True),
        ("cpu", False, True, False),  # amp=false turns mixed precision off everywhere
    ],
)
def test_autocast_is_bf16_where_enabled(device: str, amp: bool, cpu_bf16: bool, enabled: bool) -> None:
    settings = autocast_settings(torch.device(device), amp=amp, cpu_bf16=cpu_bf16)
    assert settings.enabled is enabled and settings.dtype == torch.bfloat16 and settings.device_type == device


def test_cpu_bf16_autocast_runs_convolutions_in_bf16() -> None:
    conv = torch.nn.Conv2d(3, 4, 3)
    with torch.autocast(**autocast_settings(torch.device("cpu"), cpu_bf16=True).kwargs):  # type: ignore[arg-type]
        assert conv(torch.rand(1, 3, 8, 8)).dtype == torch.bfloat16
    with torch.autocast(**autocast_settings(torch.device("cpu")).kwargs):  # type: ignore[arg-type]
        assert conv(torch.rand(1, 3, 8, 8)).dtype == torch.float32


def test_cpu_is_always_available_and_unknown_devices_are_refused() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="'tpu'"):
        resolve_device("tpu")
