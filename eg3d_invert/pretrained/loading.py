"""One entry point for every generator file: :func:`load_generator`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from .._io import file_sha256
from ..devices import resolve_device
from ..errors import CheckpointError
from ..generator import TriPlaneGenerator
from . import native, official

_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def detect_format(path: str | Path) -> str:
    """'official-pickle', 'torch' (a torch.save file), 'safetensors', or raise CheckpointError.

    safetensors is recognised by its structure (a little-endian header length that fits the
    file, then a JSON object) before the pickle test: its first byte is the low byte of that
    length, so a header of 128 + 256k bytes starts with 0x80 just like a pickle does.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            size = os.fstat(f.fileno()).st_size
            if _looks_like_safetensors(f, head, size):
                return "safetensors"
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file") from None
    if head.startswith(b"PK\x03\x04") or head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch"
    if head[:1] == b"\x80" and head[1:2] in _PICKLE_PROTOCOLS:
        return "official-pickle"
    raise CheckpointError(f"{path}: not an EG3D checkpoint (neither a pickle, a torch file nor safetensors)")


_SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library's own limit
_PICKLE_PROTOCOLS = {bytes([p]) for p in range(2, 6)}


def _looks_like_safetensors(f, head: bytes, size: int) -> bool:
    """The safetensors layout: u64 header length n, then n bytes of JSON object (space-padded)."""
    if len(head) < 10 or head[8:9] != b"{":
        return False
    n = int.from_bytes(head[:8], "little")
    if n < 2 or 8 + n > size or n > _SAFETENSORS_MAX_HEADER:
        return False
    f.seek(8)
    return f.read(n).rstrip(b" ").endswith(b"}")


def load_generator(path: str | os.PathLike, device: str | torch.device | None = None,
                   base: str | os.PathLike | TriPlaneGenerator | None = None) -> TriPlaneGenerator:
    """Load a generator from any supported file, in eval mode with gradients off.

    Args:
        path: an official training snapshot (``.pkl``: ``G_ema`` is returned, nothing in the file
            is executed), a ``{'G_ema': state_dict}`` torch file (EG3D-projector / PTI output), or
            an eg3d-invert safetensors file (full, or a tuned delta). Registry names and URLs
            are resolved (and downloaded) first.
        device: where the tensors go (``None``: CPU, ``'auto'``: the best available).
        base: for ``{'G_ema': ...}`` files, the configuration's source: a registry name with a
            known configuration (``'ffhq512-128'``), a base checkpoint file, or a generator; for
            delta files, the base checkpoint (found automatically when the file it names is
            still where it was).
    """
    from .download import resolve_checkpoint

    dev = resolve_device(device)
    path = Path(path) if Path(path).exists() else resolve_checkpoint(str(path))
    fmt = detect_format(path)
    if fmt == "official-pickle":
        G = official.load_official_pickle(path, device=dev)
    elif fmt == "torch":
        G = _load_state_dict_with_base(path, base, dev)
    else:
        header = native.read_header(path)
        base_G = None
        if header is not None and "base" in header:
            base_G = resolve_delta_base(path, header["base"], base, dev)
        G = native.load_native(path, device=dev, base=base_G)
    G.checkpoint_path = str(path)
    G.checkpoint_format = fmt
    return G


def _load_state_dict_with_base(path: Path, base, dev) -> TriPlaneGenerator:
    tensors = official.load_state_dict_file(path, device=dev)
    if base is None:
        raise CheckpointError(f"{path}: holds weights only ({{'G_ema': state_dict}}); say which checkpoint they "
                              f"belong to with base= (on the command line --base), e.g. 'ffhq512-128' or the "
                              f"base .pkl file")
    if isinstance(base, TriPlaneGenerator):
        init_kwargs, nrr, rk = base.init_kwargs, base.neural_rendering_resolution, base.rendering_kwargs
    elif Path(base).exists():
        ref = load_generator(base, device="cpu")
        init_kwargs, nrr, rk = ref.init_kwargs, ref.neural_rendering_resolution, ref.rendering_kwargs
    else:
        init_kwargs, nrr = official.known_config(str(base))
        rk = None
    return official.build_generator(init_kwargs, tensors, neural_rendering_resolution=nrr, rendering_kwargs=rk,
                                    source=str(path), device=dev)


def resolve_delta_base(path: Path, info: dict[str, Any], base, dev) -> TriPlaneGenerator:
    """The base generator of the delta file ``path`` whose header ``base`` entry is ``info``.

    ``base``: a generator (checked against the recorded SHA-256 when it knows its file), a path,
    or None to look where the header says (its path, then the registry cache). A file is only
    accepted if its SHA-256 matches, so a delta is never applied to the wrong weights.
    """
    want = info["sha256"]
    if isinstance(base, TriPlaneGenerator):
        have = file_sha256(base.checkpoint_path) if base.checkpoint_path else None
        if have is not None and have != want:
            raise CheckpointError(f"{path}: was tuned from a base with sha256 {want[:12]}..., "
                                  f"but the given base has {have[:12]}...")
        return base
    candidates = [Path(base)] if base is not None else []
    if base is None:
        if info.get("path"):
            candidates.append(Path(info["path"]))
        if info.get("name"):
            from .cache import cached_path
            try:
                candidates.append(cached_path(info["name"]))
            except Exception:  # unknown registry name: nothing to try
                pass
    for cand in candidates:
        if cand.is_file() and file_sha256(cand) == want:
            return load_generator(cand, device=dev)
    where = ", ".join(str(c) for c in candidates) or "nowhere recorded"
    raise CheckpointError(f"{path}: needs its base checkpoint (sha256 {want[:12]}...), not found at {where}; "
                          f"pass base=PATH")


def load_base_generator(tuned: str | os.PathLike, base=None, device=None) -> TriPlaneGenerator:
    """The base generator of a tuned delta file (``tuned.safetensors``).

    ``base`` as for :func:`load_generator` (path, registry name or generator); None: the
    checkpoint the file records, found by path or in the cache and checked against its SHA-256.

    Raises:
        CheckpointError: ``tuned`` is not a delta file, or its base is not found or differs.
    """
    from .download import resolve_checkpoint

    if isinstance(base, (str, os.PathLike)) and not Path(base).is_file():
        base = resolve_checkpoint(str(base))  # a registry name or URL
    tuned = Path(tuned)
    header = native.read_header(tuned)
    if header is None or "base" not in header:
        raise CheckpointError(f"{tuned}: not a tuned (delta) generator file written by eg3d-invert")
    return resolve_delta_base(tuned, header["base"], base, resolve_device(device))


def checkpoint_record(G: TriPlaneGenerator) -> dict[str, Any]:
    """Which checkpoint ``G`` is, as reports and delta files record it: the file's SHA-256,
    resolved path, registry name and format; for a generator that did not come from a file, a
    SHA-256 of its tensors (a delta against it can then only be read by passing it as ``base=``)."""
    from .registry import get_model_info

    path = G.checkpoint_path
    if path and Path(path).is_file():
        info: dict[str, Any] = {"sha256": file_sha256(path), "path": str(Path(path).resolve())}
        try:
            info["name"] = get_model_info(Path(path).stem).name
        except Exception:  # noqa: BLE001 - not a registry checkpoint: the path is enough
            pass
        info["format"] = G.checkpoint_format
        return info
    h = hashlib.sha256()
    for k, v in sorted(G.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return {"sha256": h.hexdigest(), "path": None, "kind": "tensor-hash (the base is not a file)", "format": None}


def describe_checkpoint(path: str | os.PathLike, G: TriPlaneGenerator | None = None) -> dict[str, Any]:
    """What ``eg3d-invert info`` prints: resolution, rendering settings, sizes, hash."""
    path = Path(path)
    G = G if G is not None else load_generator(path)
    rk = G.rendering_kwargs
    n_params = sum(p.numel() for p in G.parameters())
    return {
        "path": str(path),
        "format": G.checkpoint_format or detect_format(path),
        "file_size": path.stat().st_size,
        "sha256": file_sha256(path),
        "img_resolution": G.img_resolution,
        "neural_rendering_resolution": G.neural_rendering_resolution,
        "superresolution_module": str(rk["superresolution_module"]).rsplit(".", 1)[-1],
        "z_dim": G.z_dim, "c_dim": G.c_dim, "w_dim": G.w_dim, "num_ws": G.num_ws,
        "mapping_layers": G.backbone.mapping.num_layers,
        "parameters": n_params,
        "buffers": sum(b.numel() for b in G.buffers()),
        "rendering": {k: rk[k] for k in ("depth_resolution", "depth_resolution_importance", "ray_start", "ray_end",
                                         "box_warp", "c_scale", "c_gen_conditioning_zero", "avg_camera_radius",
                                         "avg_camera_pivot", "superresolution_noise_mode", "sr_antialias",
                                         "white_back", "density_noise") if k in rk},
    }
