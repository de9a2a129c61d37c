"""Reading official EG3D training snapshots (``.pkl``) without running anything they contain.

Official snapshots are pickles written by ``torch_utils.persistence``: every network embeds its
module source code, and the official loader ``exec``s it. A pickle can make the loader call any
importable function (``os.system`` included), so a checkpoint is untrusted input. This reader:

* resolves only an allow-list of globals, each to a harmless stand-in of ours (nothing from the
  file is imported or executed; the embedded source is kept as text and never run);
* rebuilds every tensor storage with ``torch.load(weights_only=True)`` and ``map_location``,
  so tensors saved on a CUDA device load on a CPU-only machine;
* refuses anything else with :class:`~eg3d_invert.errors.UnsafeCheckpointError` naming the file
  and the global it asked for.

The result is a tree of :class:`ModuleRecord` objects (class name, init arguments, parameters,
buffers, plain attributes, children) from which :mod:`.official` builds our generator.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, UnsafeCheckpointError, first_line


@dataclass
class ModuleRecord:
    """One ``torch.nn.Module`` as stored in a snapshot, without its class being instantiated."""

    class_name: str                  #: e.g. 'TriPlaneGenerator' or 'Sequential'
    module: str                      #: official module path, e.g. 'training.triplane'
    persistent: bool                 #: True if it came through persistence (source embedded)
    state: dict = field(repr=False)  #: the module's ``__dict__`` as pickled

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args", ()))

    @property
    def init_kwargs(self) -> dict:
        return _plain(self.state.get("_init_kwargs", {}))

    @property
    def children(self) -> dict[str, "ModuleRecord"]:
        return {k: v for k, v in (self.state.get("_modules") or {}).items() if v is not None}

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """All parameters and persistent buffers, keyed like ``state_dict()``."""
        out: dict[str, torch.Tensor] = {}
        non_persistent = set(self.state.get("_non_persistent_buffers_set") or ())
        for name, t in (self.state.get("_parameters") or {}).items():
            if t is not None:
                out[prefix + name] = t
        for name, t in (self.state.get("_buffers") or {}).items():
            if t is not None and name not in non_persistent:
                out[prefix + name] = t
        for name, child in self.children.items():
            if not isinstance(child, ModuleRecord):
                raise CheckpointError(f"unexpected child {name!r} of type {type(child).__name__}")
            out.update(child.tensors(prefix + name + "."))
        return out

    def attribute(self, name: str, default: Any = None) -> Any:
        return self.state.get(name, default)


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict (attribute access is not needed)."""


class _PlainObject:
    """Stand-in for a non-persistent module class; pickle fills ``__dict__`` via BUILD."""

    _official_module = ""
    _official_name = ""

    def __reduce__(self):  # never re-pickled
        raise TypeError("stand-in objects cannot be pickled")


def _plain(obj: Any) -> Any:
    """EasyDicts and OrderedDicts to plain dicts, recursively (for config use)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _numpy_scalar(dtype: np.dtype, data: bytes | None = None) -> Any:
    """``numpy.core.multiarray.scalar`` for numeric dtypes only (no object arrays)."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray)):
        raise UnsafeCheckpointError("a numpy scalar in the checkpoint is not a plain number")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


def _numpy_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dt = np.dtype(spec, align, copy)
    if dt.hasobject:
        raise UnsafeCheckpointError("object dtypes are not allowed in checkpoints")
    return dt


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if backward_hooks:
        raise UnsafeCheckpointError("tensors with backward hooks are not allowed in checkpoints")
    untyped = getattr(storage, "_untyped_storage", storage)  # legacy streams give TypedStorage
    t = torch.empty((0,), dtype=storage.dtype, device=untyped.device)
    t.set_(untyped, storage_offset, tuple(size), tuple(stride))
    t.requires_grad_(bool(requires_grad) and t.is_floating_point())
    return t


def _rebuild_parameter(data, requires_grad, backward_hooks=None, *state):
    if backward_hooks:
        raise UnsafeCheckpointError("parameters with backward hooks are not allowed in checkpoints")
    return torch.nn.Parameter(data.detach(), requires_grad=bool(requires_grad))


def _reconstruct_persistent_obj(meta: dict) -> ModuleRecord:
    """The persistence hook, minus its ``exec`` of the embedded source."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or "class_name" not in meta:
        raise UnsafeCheckpointError("a persistent object in the checkpoint is not a class instance")
    module = "training"
    src = meta.get("module_src")
    if isinstance(src, str) and src.startswith("# source removed: "):
        module = src.split(": ", 1)[1].removesuffix(".py").replace("/", ".")
    return ModuleRecord(class_name=str(meta["class_name"]), module=module, persistent=True,
                        state=meta.get("state") or {})


# Classes the official files pickle by reference (non-persistent modules): rebuilt as records.
_PLAIN_CLASSES = {
    ("training.triplane", "OSGDecoder"),
    ("training.volumetric_rendering.renderer", "ImportanceRenderer"),
    ("training.volumetric_rendering.ray_marcher", "MipRayMarcher2"),
    ("training.volumetric_rendering.ray_sampler", "RaySampler"),
    ("torch.nn.modules.container", "Sequential"),
    ("torch.nn.modules.activation", "Softplus"),
}


def _plain_class(module: str, name: str) -> type:
    return type(name, (_PlainObject,), {"_official_module": module, "_official_name": name})


def load_failure(path: object, exc: BaseException, what: str = "checkpoint") -> CheckpointError:
    """The error for a failed ``torch.load(..., weights_only=True)`` of ``path``.

    A file the weights-only loader refused gives an :class:`UnsafeCheckpointError` naming the
    global it asked for (torch's own message advises ``weights_only=False``, i.e. running the
    file's code, which we never do); anything else is an unreadable file.
    """
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "weights only load failed" in text.lower():
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            return UnsafeCheckpointError(f"{path}: refusing to load the {what}: it references the global "
                                         f"'{found.group(1)}', which is not among the tensors and settings it "
                                         f"needs (it could run code)")
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        return CheckpointError(f"{path}: not a readable {what} (the weights-only reader stopped: "
                               f"{detail.group(1).strip() if detail else 'unsupported content'})")
    return CheckpointError(f"{path}: not a readable {what} ({type(exc).__name__}: {first_line(exc)})")


class _BoundedReader(io.RawIOBase):
    """A file that refuses reads past its end before they happen: a pickle can declare a frame
    or a string of any length, and the unpickler would allocate that much before noticing."""

    def __init__(self, f, size: int):
        super().__init__()
        self._f, self._left = f, size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._left
        if n > self._left:
            raise pickle.UnpicklingError(f"the file declares {n} more bytes where {self._left} remain")
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readline(self, size: int = -1) -> bytes:
        line = self._f.readline(self._left if size is None or size < 0 else min(size, self._left))
        self._left -= len(line)
        return line


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str, map_location):
        super().__init__(file)
        self._path = path
        self._map_location = map_location

    def _load_storage(self, payload: bytes):
        """``torch.storage._load_from_bytes`` with the weights-only loader and device mapping."""
        if not isinstance(payload, (bytes, bytearray)):
            raise UnsafeCheckpointError(f"{self._path}: malformed tensor storage")
        try:
            return torch.load(io.BytesIO(bytes(payload)), map_location=self._map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - refused or unreadable, reported either way
            raise load_failure(self._path, exc, "checkpoint's tensor storage") from None

    def find_class(self, module: str, name: str):
        allowed = {
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("dnnlib.util", "EasyDict"): EasyDict,
            ("dnnlib", "EasyDict"): EasyDict,
            ("numpy", "dtype"): _numpy_dtype,
            ("numpy.core.multiarray", "scalar"): _numpy_scalar,   # files written with numpy 1.x
            ("numpy._core.multiarray", "scalar"): _numpy_scalar,  # files written with numpy 2.x
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch.storage", "_load_from_bytes"): self._load_storage,
            ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        }
        if (module, name) in allowed:
            return allowed[(module, name)]
        if (module, name) in _PLAIN_CLASSES:
            return _plain_class(module, name)
        raise UnsafeCheckpointError(
            f"{self._path}: refusing to load the checkpoint: it references the global '{module}.{name}', "
            "which is not among the tensors and settings an EG3D checkpoint needs (it could run code)")


def _to_record(obj: Any) -> Any:
    """Turn stand-in objects into ModuleRecords, recursively through modules' children."""
    if isinstance(obj, _PlainObject):
        rec = ModuleRecord(class_name=obj._official_name, module=obj._official_module, persistent=False,
                           state=dict(vars(obj)))
        obj = rec
    if isinstance(obj, ModuleRecord):
        mods = obj.state.get("_modules")
        if isinstance(mods, dict):
            obj.state["_modules"] = collections.OrderedDict((k, _to_record(v)) for k, v in mods.items())
        return obj
    if isinstance(obj, dict):
        return type(obj)((k, _to_record(v)) for k, v in obj.items()) if not isinstance(obj, EasyDict) else \
            EasyDict((k, _to_record(v)) for k, v in obj.items())
    return obj


def load_snapshot(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read an official snapshot pickle safely; returns its top-level dict of records.

    Raises:
        UnsafeCheckpointError: the pickle asks for anything outside the allow-list.
        CheckpointError: the file is not a readable pickle.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(_BoundedReader(f, os.fstat(f.fileno()).st_size), str(path), map_location).load()
    except (UnsafeCheckpointError, CheckpointError):
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any failure (OverflowError, ...) is unreadable
        raise CheckpointError(f"{path}: not a readable EG3D checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    obj = _to_record(obj)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a training snapshot (a dict with 'G_ema'), got {type(obj).__name__}")
    return obj
