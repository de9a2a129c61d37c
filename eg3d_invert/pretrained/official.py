"""Official checkpoint formats -> :class:`~eg3d_invert.generator.TriPlaneGenerator`.

Two official formats are read:

* training snapshots (``.pkl``, what NVIDIA released): read by :mod:`.safe_pickle`, never
  executed; ``G_ema`` is the generator (``G`` is the un-averaged training copy);
* ``{'G_ema': state_dict}`` files (``.pth``/``.pt``, what EG3D-projector and PTI write): tensors
  only, so the configuration comes from a known base checkpoint.
"""

from __future__ import annotations

import copy
import operator
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError, ConfigError
from ..generator import TriPlaneGenerator
from .safe_pickle import ModuleRecord, load_failure, load_snapshot

#: Buffers the official training loop adds that the generator itself never uses.
_IGNORED_TENSORS = ("dataset_label_std",)

# The configuration of NVIDIA's ffhq512-128 (from its released snapshot's init_kwargs).
_FFHQ_RENDERING = {
    "image_resolution": 512, "disparity_space_sampling": False, "clamp_mode": "softplus",
    "superresolution_module": "training.superresolution.SuperresolutionHybrid8XDC",
    "c_gen_conditioning_zero": False, "gpc_reg_prob": 0.5, "c_scale": 1.0, "superresolution_noise_mode": "none",
    "density_reg": 0.25, "density_reg_p_dist": 0.004, "reg_type": "l1", "decoder_lr_mul": 1.0, "sr_antialias": True,
    "depth_resolution": 48, "depth_resolution_importance": 48, "ray_start": 2.25, "ray_end": 3.3, "box_warp": 1,
    "avg_camera_radius": 2.7, "avg_camera_pivot": [0, 0, 0.2],
}
FFHQ512_128_INIT_KWARGS: dict[str, Any] = {
    "z_dim": 512, "w_dim": 512, "mapping_kwargs": {"num_layers": 2}, "channel_base": 32768, "channel_max": 512,
    "fused_modconv_default": "inference_only", "rendering_kwargs": _FFHQ_RENDERING, "num_fp16_res": 0,
    "sr_num_fp16_res": 4, "sr_kwargs": {"channel_base": 32768, "channel_max": 512,
                                        "fused_modconv_default": "inference_only"},
    "conv_clamp": None, "c_dim": 25, "img_resolution": 512, "img_channels": 3,
}

#: Base configurations that a bare ``{'G_ema': state_dict}`` file can name. The rebalanced FFHQ
#: model was trained with the same command line, so it shares ffhq512-128's configuration.
KNOWN_CONFIGS: dict[str, tuple[dict[str, Any], int]] = {
    "ffhq512-128": (FFHQ512_128_INIT_KWARGS, 128),
    "ffhqrebalanced512-128": (FFHQ512_128_INIT_KWARGS, 128),
}


def build_generator(init_kwargs: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], *,
                    neural_rendering_resolution: int, rendering_kwargs: Mapping | None = None,
                    source: str = "checkpoint", device: torch.device | str = "cpu") -> TriPlaneGenerator:
    """Instantiate a generator from its init kwargs and load tensors by their official names.

    The module is built on the meta device and the checkpoint's tensors are assigned to it,
    so no random initialisation is computed and thrown away.
    """
    if not isinstance(init_kwargs, Mapping) or not all(isinstance(k, str) for k in init_kwargs):
        raise CheckpointError(f"{source}: the generator configuration (init_kwargs) is not a mapping of names")
    kwargs = copy.deepcopy(dict(init_kwargs))
    try:
        with torch.device("meta"):
            G = TriPlaneGenerator(**kwargs)
    except Exception as exc:  # noqa: BLE001 - an untrusted configuration can fail in any constructor
        raise CheckpointError(f"{source}: unsupported generator configuration ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())})") from None
    tensors = {k: v for k, v in state_dict.items() if k not in _IGNORED_TENSORS}
    expected = G.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    wrong = [f"{k} {tuple(tensors[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} with other shapes (e.g. {wrong[0]})")
        raise CheckpointError(f"{source}: tensors do not match the generator configuration: " + "; ".join(parts))
    try:
        nrr = operator.index(neural_rendering_resolution)  # ints, numpy ints; not floats, strings or bools
    except TypeError:
        nrr = None
    if nrr is None or isinstance(neural_rendering_resolution, bool) or nrr < 1:
        raise CheckpointError(f"{source}: neural_rendering_resolution must be a positive integer, "
                              f"got {neural_rendering_resolution!r}")
    if rendering_kwargs is not None:
        if not isinstance(rendering_kwargs, Mapping):
            raise CheckpointError(f"{source}: rendering_kwargs must be a dict, got {type(rendering_kwargs).__name__}")
        G.rendering_kwargs = dict(rendering_kwargs)
        try:
            G.render_settings()  # the settings the file's generator renders with, not only its init's
        except ConfigError as exc:
            raise CheckpointError(f"{source}: unsupported generator configuration ({exc})") from None
    device = torch.device(device)
    G.load_state_dict({k: tensors[k].detach().to(device=device, dtype=expected[k].dtype).contiguous()
                       for k in expected}, strict=True, assign=True)
    G.neural_rendering_resolution = nrr
    return G.eval().requires_grad_(False)


def generator_from_record(rec: ModuleRecord, source: str, device="cpu") -> TriPlaneGenerator:
    if not isinstance(rec, ModuleRecord) or rec.class_name != "TriPlaneGenerator":
        name = rec.class_name if isinstance(rec, ModuleRecord) else type(rec).__name__
        raise CheckpointError(f"{source}: G_ema is a {name}, not an EG3D TriPlaneGenerator")
    if rec.init_args:
        raise CheckpointError(f"{source}: unexpected positional init arguments in G_ema")
    state_rk = rec.attribute("rendering_kwargs")
    return build_generator(rec.init_kwargs, rec.tensors(), source=source, device=device,
                           neural_rendering_resolution=rec.attribute("neural_rendering_resolution", 64),
                           rendering_kwargs=dict(state_rk) if isinstance(state_rk, dict) else None)


def load_official_pickle(path: str | Path, device="cpu") -> TriPlaneGenerator:
    """``G_ema`` of an official training snapshot, read without executing the file."""
    snap = load_snapshot(path, map_location=device)
    if "G_ema" not in snap:
        raise CheckpointError(f"{path}: no 'G_ema' in this snapshot (keys: {', '.join(map(str, snap))})")
    return generator_from_record(snap["G_ema"], str(path), device=device)


def load_state_dict_file(path: str | Path, device="cpu") -> dict[str, torch.Tensor]:
    """The generator tensors of a ``{'G_ema': state_dict}`` (or bare state dict) torch file."""
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: refused, or unreadable in any other way
        raise load_failure(path, exc, "torch file") from None
    if isinstance(obj, Mapping) and "G_ema" in obj:
        obj = obj["G_ema"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected {{'G_ema': state_dict}} of tensors")
    return dict(obj)


def known_config(name: str) -> tuple[dict[str, Any], int]:
    """(init_kwargs, neural_rendering_resolution) of a released checkpoint whose config is known."""
    key = Path(name).stem if name.endswith(".pkl") else name
    if key not in KNOWN_CONFIGS:
        raise ConfigError(f"no built-in configuration for {name!r}; pass the base checkpoint file instead "
                          f"(known: {', '.join(KNOWN_CONFIGS)})")
    kwargs, nrr = KNOWN_CONFIGS[key]
    return copy.deepcopy(kwargs), nrr
