"""Results of the inversion: :class:`Pivot` (projection) and :class:`TuningResult` (pivotal tuning).

File formats:

* pivot ``.pt``: a plain dict of tensors, strings, numbers, lists and dicts (no classes), so it
  loads with ``torch.load(..., weights_only=True)``; ``.npy``: EG3D-projector's ``ws`` array
  ``[1, 14, 512]`` float32 alone (EG3D tools read it; it does not hold the camera or noise).
* tuned generator: an eg3d-invert safetensors *delta* (only the tensors that changed, plus the
  base checkpoint's SHA-256; :func:`eg3d_invert.pretrained.load_generator` reads it back with
  ``base=``), or ``{'G_ema': state_dict}`` ``.pth`` as EG3D-projector writes for EG3D tools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_path
from ..errors import CheckpointError
from ..pretrained.safe_pickle import load_failure
from ._common import as_label, swapped_noise

PIVOT_FORMAT = "eg3d-invert/pivot"
PIVOT_VERSION = 1


def _render(G, ws: torch.Tensor, camera, noise, kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    if camera is None:
        raise ValueError("no camera: pass camera= (a Camera or a (B, 25) label)")
    c = camera.label if hasattr(camera, "label") else torch.as_tensor(camera, dtype=torch.float32)
    c = c.reshape(-1, 25).to(G.device)
    opts = {"noise_mode": "const", "deterministic": True}
    opts.update(kwargs)
    ws = ws.to(G.device).expand(c.shape[0], -1, -1)
    with torch.no_grad(), swapped_noise(G, {k: v.to(G.device) for k, v in (noise or {}).items()}):
        return G.synthesis(ws, c, **opts)


@dataclass
class Pivot:
    """A projected latent: the pivot of pivotal tuning.

    Attributes:
        ws: ``(1, num_ws, w_dim)`` float32 (``(1, 14, 512)`` for EG3D); for ``space='w'`` every
            row is the same w.
        camera: ``(1, 25)`` label the photo is rendered with (the refined one if camera
            refinement was on), or None for a bare ``.npy`` pivot.
        space: ``'w'`` or ``'w+'``.
        camera_estimate: ``(1, 25)`` label given to the projection (before refinement).
        noise: the optimised constant noise maps ``{buffer name: (H, W)}``, or None. The official
            pipeline discards them; :meth:`render` uses them unless ``use_noise=False``.
        settings: the :class:`ProjectionSettings` as a dict.
        history: one dict per step (``loss``, ``lpips``, ``noise_reg``, ``lr``, ...).
        steps: steps run; ``stop_reason``: ``'completed'``, ``'callback'``, ``'interrupted'`` (or
            ``'running'`` for a snapshot taken by a progress callback).
        camera_correction: the learned correction in degrees / world units, if refined.
        source: where the generator came from (checkpoint path), informational.
    """

    ws: torch.Tensor
    camera: torch.Tensor | None
    space: str = "w"
    camera_estimate: torch.Tensor | None = None
    noise: dict[str, torch.Tensor] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    stop_reason: str = "completed"
    camera_correction: dict[str, Any] | None = None
    source: str | None = None

    def __post_init__(self):
        if self.ws.ndim != 3 or self.ws.shape[0] != 1:
            raise ValueError(f"ws must be (1, num_ws, w_dim), got {tuple(self.ws.shape)}")
        if self.camera is not None:
            self.camera = as_label(self.camera)
        if self.camera_estimate is not None:
            self.camera_estimate = as_label(self.camera_estimate)

    # --- rendering -------------------------------------------------------------------------

    def render(self, G, camera=None, *, use_noise: bool = True, **synthesis_kwargs) -> dict[str, torch.Tensor]:
        """Render the pivot with generator ``G`` (the base it was projected with).

        Args:
            camera: a :class:`~eg3d_invert.camera.Camera` or labels ``(B, 25)``; default: the
                pivot's own camera.
            use_noise: use the optimised noise maps (if any) instead of ``G``'s.
            **synthesis_kwargs: passed to ``G.synthesis`` (defaults ``noise_mode='const'``,
                ``deterministic=True`` so that renders are reproducible).
        Returns:
            ``G.synthesis``'s dict: ``image (B, 3, R, R)`` about [-1, 1], ``image_depth``, ...
        """
        return _render(G, self.ws, self.camera if camera is None else camera,
                       self.noise if use_noise else None, synthesis_kwargs)

    # --- files -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tensors on CPU), loadable with ``weights_only=True``."""
        return {
            "format": PIVOT_FORMAT, "version": PIVOT_VERSION,
            "ws": self.ws.detach().cpu().float().contiguous(),
            "camera": None if self.camera is None else self.camera.detach().cpu(),
            "camera_estimate": None if self.camera_estimate is None else self.camera_estimate.detach().cpu(),
            "space": self.space,
            "noise": None if self.noise is None else {k: v.detach().cpu() for k, v in self.noise.items()},
            "settings": self.settings, "history": self.history, "steps": int(self.steps),
            "stop_reason": self.stop_reason, "camera_correction": self.camera_correction, "source": self.source,
        }

    def save(self, path: str | Path) -> Path:
        """Write the pivot: ``.npy`` -> EG3D-projector's ws array only; anything else -> the full
        ``.pt`` record. Written atomically."""
        path = Path(path)
        if path.suffix.lower() == ".npy":
            return self.save_npy(path)
        with atomic_path(path) as tmp:
            torch.save(self.to_dict(), tmp)
        return path

    def save_npy(self, path: str | Path) -> Path:
        """EG3D-projector's ``<name>_<w|w_plus>.npy``: ws ``[1, num_ws, w_dim]`` float32."""
        path = Path(path)
        with atomic_path(path, suffix=".npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, self.ws.detach().cpu().float().numpy())
        return path

    @classmethod
    def load(cls, path: str | Path, camera=None) -> "Pivot":
        """Read a ``.pt`` written by :meth:`save` or an EG3D-projector ``.npy`` (``[1, 14, 512]``;
        give its ``camera``, a label or :class:`Camera`, to render it)."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such pivot file")
        if path.suffix.lower() == ".npy":
            try:
                ws = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise CheckpointError(f"{path}: not a numpy ws array ({exc})") from None
            ws = torch.from_numpy(np.asarray(ws, dtype=np.float32))
            if ws.ndim == 2:
                ws = ws[None]
            if ws.ndim != 3 or ws.shape[0] != 1:
                raise CheckpointError(f"{path}: expected ws of shape [1, num_ws, w_dim], got {tuple(ws.shape)}")
            space = "w" if bool((ws == ws[:, :1]).all()) else "w+"
            return cls(ws=ws, camera=None if camera is None else as_label(camera), space=space,
                       source=str(path), stop_reason="completed")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - refused or unreadable, reported either way
            raise load_failure(path, exc, "pivot file") from None
        if not isinstance(data, dict) or data.get("format") != PIVOT_FORMAT:
            raise CheckpointError(f"{path}: not an eg3d-invert pivot file")
        if int(data.get("version", 0)) > PIVOT_VERSION:
            raise CheckpointError(f"{path}: written by a newer eg3d-invert (pivot version {data['version']})")
        cam = data["camera"] if camera is None else as_label(camera)
        return cls(ws=data["ws"], camera=cam, space=data["space"], camera_estimate=data.get("camera_estimate"),
                   noise=data.get("noise"), settings=data.get("settings") or {}, history=data.get("history") or [],
                   steps=int(data.get("steps", 0)), stop_reason=data.get("stop_reason", "completed"),
                   camera_correction=data.get("camera_correction"), source=data.get("source"))


@dataclass
class TuningResult:
    """A generator tuned around a pivot.

    Attributes:
        generator: the tuned copy (eval mode, gradients off); the base is untouched.
        pivot: the pivot it was tuned for; its ``camera`` is the refined one if the camera was
            refined during tuning.
        settings: the :class:`TuningSettings` as a dict.
        history: one dict per step (``loss``, ``l2``, ``lpips``, ``lr``, ...).
        steps: optimiser steps taken.
        stop_reason: ``'threshold'`` (LPIPS reached ``lpips_threshold``), ``'max_steps'``,
            ``'callback'`` or ``'interrupted'``.
        camera_correction: the learned camera correction (degrees / world units), if refined.
        base: the base generator (not saved; needed to write a delta).
    """

    generator: Any
    pivot: Pivot
    settings: dict[str, Any]
    history: list[dict[str, float]]
    steps: int
    stop_reason: str
    camera_correction: dict[str, Any] | None = None
    base: Any = field(default=None, repr=False)

    def render(self, camera=None, **synthesis_kwargs) -> dict[str, torch.Tensor]:
        """Render the pivot with the tuned generator (camera default: the pivot's). The pivot's
        optimised noise is not applied: whatever noise tuning used is in the tuned buffers."""
        return _render(self.generator, self.pivot.ws, self.pivot.camera if camera is None else camera, None,
                       synthesis_kwargs)

    def save_generator(self, path: str | Path, base_info: dict[str, Any] | None = None) -> Path:
        """Write the tuned generator as a safetensors delta against :attr:`base`.

        ``base_info`` defaults to :func:`~eg3d_invert.pretrained.checkpoint_record` of the base
        (checkpoint hash and path).
        Read back with ``load_generator(path, base=<base checkpoint or generator>)``.
        """
        from ..pretrained import checkpoint_record, save_generator

        if self.base is None:
            raise ValueError("this result has no base generator to write a delta against")
        info = base_info or checkpoint_record(self.base)
        extra = {"tuning": self.settings, "steps": self.steps, "stop_reason": self.stop_reason,
                 "camera": self.pivot.camera.reshape(-1).tolist() if self.pivot.camera is not None else None,
                 "camera_correction": self.camera_correction}
        return save_generator(self.generator, path, base=self.base, base_info=info, extra=extra)

    def export_pth(self, path: str | Path) -> Path:
        """EG3D-projector / PTI's ``{'G_ema': state_dict}`` file (all tensors, for EG3D tools)."""
        path = Path(path)
        state = {k: v.detach().cpu().contiguous() for k, v in self.generator.state_dict().items()}
        with atomic_path(path) as tmp:
            torch.save({"G_ema": state}, tmp)
        return path
