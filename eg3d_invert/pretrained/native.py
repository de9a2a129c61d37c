"""eg3d-invert's own checkpoint format: one safetensors file, config in its header.

A ``.safetensors`` file holds the generator's tensors under their official names; its metadata
header holds a JSON document (``eg3d_invert``) with the official ``init_kwargs``, the
``neural_rendering_resolution`` and the ``rendering_kwargs``. Nothing in it is executable and it
can be memory-mapped.

A *delta* file (what pivotal tuning writes) holds only the tensors that differ from a base
checkpoint and records the base's SHA-256, so a tuned generator costs megabytes, not hundreds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._io import atomic_path
from ..errors import CheckpointError
from ..generator import TriPlaneGenerator
from .official import build_generator

FORMAT = "eg3d-invert/generator"
FORMAT_VERSION = 1


def generator_config(G: TriPlaneGenerator) -> dict[str, Any]:
    """Everything besides tensors needed to rebuild ``G`` (JSON-serialisable)."""
    return {
        "init_kwargs": G.init_kwargs,
        "neural_rendering_resolution": int(G.neural_rendering_resolution),
        "rendering_kwargs": dict(G.rendering_kwargs),
    }


def save_generator(G: TriPlaneGenerator, path: str | Path, *, base: TriPlaneGenerator | None = None,
                   base_info: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``G`` as a safetensors file (atomically).

    Args:
        base: if given, only tensors that differ from ``base`` are stored (a delta file);
            ``base_info`` (e.g. ``{'sha256': ..., 'name': ..., 'path': ...}``) says how to find
            the base again and is required then.
        extra: free-form JSON-serialisable metadata stored alongside.
    """
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in G.state_dict().items()}
    header: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, **generator_config(G)}
    if base is not None:
        if not base_info or "sha256" not in base_info:
            raise ValueError("a delta file needs base_info with the base checkpoint's sha256")
        base_sd = base.state_dict()
        tensors = {k: v for k, v in tensors.items()
                   if k not in base_sd or not torch.equal(v, base_sd[k].detach().to("cpu"))}
        header["base"] = dict(base_info)
    if extra:
        header["extra"] = extra
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"eg3d_invert": json.dumps(header)})
    return path


def read_header(path: str | Path) -> dict[str, Any] | None:
    """The eg3d-invert header of a safetensors file, or None if it has none."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if "eg3d_invert" not in meta:
        return None
    try:
        header = json.loads(meta["eg3d_invert"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt eg3d-invert header ({exc})") from None
    _check_header(header, path)
    return header


def _check_header(header: Any, path) -> None:
    """The header's shape, checked before anything reads it (the file is untrusted input)."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an eg3d-invert generator file")
    version = header.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: corrupt eg3d-invert header (version {version!r})")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer eg3d-invert (format version {version})")
    missing = [k for k in ("init_kwargs", "neural_rendering_resolution") if k not in header]
    if missing:
        raise CheckpointError(f"{path}: its eg3d-invert header has no generator configuration "
                              f"(missing {', '.join(missing)})")
    for key in ("init_kwargs", "rendering_kwargs", "base"):
        if key in header and not isinstance(header[key], dict):
            raise CheckpointError(f"{path}: corrupt eg3d-invert header ({key} must be a JSON object, "
                                  f"got {type(header[key]).__name__})")
    sha = header.get("base", {}).get("sha256")
    if "base" in header and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise CheckpointError(f"{path}: corrupt eg3d-invert header (the base checkpoint's sha256 is {sha!r})")


def load_native(path: str | Path, device="cpu", base: TriPlaneGenerator | None = None) -> TriPlaneGenerator:
    """Read a file written by :func:`save_generator`; delta files need their ``base`` generator."""
    header = read_header(path)
    if header is None:
        raise CheckpointError(f"{path}: a safetensors file without an eg3d-invert header; "
                              "pass the base checkpoint's configuration to read bare weights")
    try:
        tensors = load_file(str(path), device=str(torch.device(device)))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable tensors ({exc})") from None
    if "base" in header:
        if base is None:
            raise CheckpointError(f"{path}: holds only the tensors tuned from base checkpoint "
                                  f"{header['base'].get('name') or header['base'].get('path')} "
                                  f"(sha256 {header['base']['sha256'][:12]}...); load it with base=")
        full = {k: v.detach() for k, v in base.state_dict().items()}
        full.update(tensors)
        tensors = full
    return build_generator(header["init_kwargs"], tensors, neural_rendering_resolution=header["neural_rendering_resolution"],
                           rendering_kwargs=header.get("rendering_kwargs"), source=str(path), device=device)
