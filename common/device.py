"""Device resolution, the one rule of every tool and training loop."""
from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device that is unknown or not usable on this machine."""


def resolve_device(device=None, local_rank: int | None = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else the CPU; otherwise the named device, checked
    to be usable here (a missing GPU fails now, not mid-run). ``local_rank`` (under torchrun):
    CUDA means this process's own GPU."""
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {str(device)!r} requested but CUDA is not available")
        if local_rank is not None:
            dev = torch.device("cuda", local_rank)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"no CUDA device {dev.index} (found {torch.cuda.device_count()})")
        return dev
    try:                                  # mps, xpu ...: unavailable ones fail here, not mid-run
        torch.empty(1, device=dev)
    except (RuntimeError, AssertionError, AttributeError) as exc:
        reason = str(exc).splitlines()[0].split(". ")[0][:120] if str(exc) else type(exc).__name__
        raise DeviceError(f"device {str(device)!r} is not available here ({reason})") from None
    return dev
