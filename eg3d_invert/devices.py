"""Torch devices by name (``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ``'mps'``), checked to exist.

A device that this machine does not have is reported at once, by name, with the ones it has,
instead of failing later inside torch (where a checkpoint mapped to a missing CUDA device reads
as an unreadable file).
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

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


#: Set to 1 to leave the C allocator as it is (see :func:`reuse_freed_memory`).
KEEP_MALLOC_ENV = "EG3D_INVERT_KEEP_MALLOC"
_MALLOC = {"done": None}
_MALLOC_LOCK = threading.Lock()


def reuse_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep and reuse the memory torch frees on the CPU.

    By default glibc serves every block over a few MB with a fresh ``mmap`` and returns it to the
    system on ``free``: each of the hundreds of large activations and gradients of a generator
    step is then new memory that the kernel must fault in and zero page by page. On a 2-core CPU
    that was a third of a tuning step of the full generator (22.8 s -> 16 s measured with
    ``benchmarks/generator.py --steps pti``), at the price of a higher peak resident memory
    (4.2 -> 4.9 GB there; the official code's step peaks at 5.6 GB). Freed memory then stays with
    the process until it exits, which suits the command line and batch workers; apps that care
    set ``$EG3D_INVERT_KEEP_MALLOC=1``.

    Process-wide and idempotent; only on glibc (elsewhere, and when the variable is set, it does
    nothing). Returns whether the setting is in effect.
    """
    with _MALLOC_LOCK:
        if _MALLOC["done"] is not None:
            return _MALLOC["done"]
        ok = False
        if os.environ.get(KEEP_MALLOC_ENV, "") in ("", "0") and platform.system() == "Linux" \
                and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL("libc.so.6")
                m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameters from <malloc.h>
                ok = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
            except (OSError, AttributeError):
                ok = False
        _MALLOC["done"] = ok
        return ok


__all__ = ["resolve_device", "available_devices", "reuse_freed_memory", "SUPPORTED_TYPES", "KEEP_MALLOC_ENV"]
