"""Torch devices by name (``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ``'mps'``), checked to exist.

A device that this machine does not have is reported at once, by name, with the ones it has,
instead of failing later inside torch (where a checkpoint mapped to a missing CUDA device reads
as an unreadable file).
"""

from __future__ import annotations

import torch

from .errors import DeviceError

#: Device types the generator runs on.
SUPPORTED_TYPES = ("cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def available_devices() -> list[str]:
    """The devices of this machine: ``cpu``, then ``cuda:0`` ... ``cuda:N-1``, then ``mps``."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        out.append("mps")
    return out


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CPU; ``'auto'`` -> CUDA, else MPS, else CPU; anything else as torch reads it,
    if this machine has it.

    Raises:
        DeviceError: not a device name, a type the generator does not run on, or a device this
            machine does not have (the message lists the ones it has).
    """
    if device is None:
        return torch.device("cpu")
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise DeviceError(f"unknown device {device!r} ({' '.join(str(exc).split())}); use auto, cpu, cuda, "
                          f"cuda:N or mps") from None
    if dev.type not in SUPPORTED_TYPES:
        raise DeviceError(f"device {str(device)!r}: eg3d-invert runs on {', '.join(SUPPORTED_TYPES)}")
    exists = {
        "cpu": True,
        "cuda": torch.cuda.is_available() and (dev.index is None or dev.index < torch.cuda.device_count()),
        "mps": _mps_available(),
    }[dev.type]
    if not exists:
        raise DeviceError(f"device {str(device)!r} is not available on this machine "
                          f"(available: {', '.join(available_devices())})")
    return dev


__all__ = ["resolve_device", "available_devices", "SUPPORTED_TYPES"]
