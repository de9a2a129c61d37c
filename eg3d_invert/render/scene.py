"""A generator together with the tri-planes of one latent, computed once.

Every output of this package (views, depth, video, mesh) only needs the tri-planes and the
last ``w`` (for the super-resolution). Computing the StyleGAN backbone once per subject and
passing the result around explicitly (instead of the official ``_last_planes`` cache) is what
makes rendering many cameras, and meshing millions of points, cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..camera import FFHQ_FOCAL, OFFICIAL_DEFAULT_PIVOT, OFFICIAL_DEFAULT_RADIUS, Camera, camera_sphere, fov_to_focal
from ..generator import TriPlaneGenerator
from ..options import check_view_angles


@dataclass(frozen=True, eq=False)  # holds tensors: identity semantics
class Scene:
    """One subject ready to render: the generator, its tri-planes and latent.

    Attributes:
        generator: the (possibly fine-tuned) generator, in eval mode.
        planes: ``(1, 3, 32, 256, 256)`` float32 tri-plane features (``G.planes(ws)``).
        ws: ``(1, num_ws, w_dim)`` float32; the super-resolution uses its last ``w``.
        lookat: the point cameras look at, world units (EG3D frame: +y up, face toward +z).
        radius: camera distance from the **world origin** (the official sampler's convention).
            :meth:`from_ws` takes both from the checkpoint
            (:func:`~eg3d_invert.camera.camera_sphere`: (0, 0, 0.2) and 2.7 for FFHQ).
    """

    generator: TriPlaneGenerator
    planes: torch.Tensor
    ws: torch.Tensor
    lookat: tuple[float, float, float] = OFFICIAL_DEFAULT_PIVOT
    radius: float = OFFICIAL_DEFAULT_RADIUS

    def __post_init__(self):
        if self.planes.ndim != 5 or self.planes.shape[0] != 1 or self.planes.shape[1] != 3:
            raise ValueError(f"planes must be (1, 3, C, H, W), got {tuple(self.planes.shape)}")
        if self.ws.ndim != 3 or self.ws.shape[0] != 1:
            raise ValueError(f"ws must be (1, num_ws, w_dim), got {tuple(self.ws.shape)}")
        if len(self.lookat) != 3 or not math.isfinite(self.radius) or self.radius <= 0:
            raise ValueError(f"bad camera pivot {self.lookat} / radius {self.radius}")

    @classmethod
    def from_ws(cls, generator: TriPlaneGenerator, ws: torch.Tensor, *, noise_mode: str = "const",
                lookat: Sequence[float] | None = None, radius: float | None = None) -> "Scene":
        """Compute the tri-planes of ``ws (1, num_ws, w_dim)`` (or ``(num_ws, w_dim)``) once.

        ``noise_mode='const'`` (the stored noise) makes every later render reproducible; it is
        what the official scripts and the inversion use.
        """
        ws = torch.as_tensor(ws, dtype=torch.float32, device=generator.device)
        if ws.ndim == 2:
            ws = ws[None]
        with torch.no_grad():
            planes = generator.planes(ws, noise_mode=noise_mode)
        pivot, rad = camera_sphere(generator)
        pivot = tuple(float(v) for v in lookat) if lookat is not None else pivot
        return cls(generator, planes, ws, pivot, float(radius) if radius is not None else rad)

    @property
    def device(self) -> torch.device:
        return self.planes.device

    @property
    def box_warp(self) -> float:
        """Side of the tri-plane cube ``[-box_warp/2, box_warp/2]^3`` in world units (1 for FFHQ)."""
        return float(self.generator.rendering_kwargs["box_warp"])

    def cameras(self, yaw_deg, pitch_deg, *, focal: float | None = None, fov_deg: float | None = None) -> Camera:
        """Cameras at geometric angles in degrees, on this scene's sphere, looking at its pivot.

        ``yaw_deg`` and ``pitch_deg`` are broadcast (scalars or sequences). Yaw is the azimuth,
        positive toward +x (the subject's left, so the face turns toward image-left); pitch is
        the elevation, positive with the camera above the head. The focal length is ``focal``
        (normalised) or derived from ``fov_deg`` with the official formula; by default the FFHQ
        label focal 4.2647 that ``gen_videos.py`` uses.
        """
        focal = resolve_focal(focal, fov_deg)
        yaw, pitch = angle_pairs(yaw_deg, pitch_deg)
        return Camera.from_angles(yaw, pitch, focal=focal, radius=self.radius, lookat=self.lookat, device=self.device)


def resolve_focal(focal: float | None, fov_deg: float | None) -> float:
    """The normalised focal length from either ``focal`` or ``fov_deg`` (not both); FFHQ's by default."""
    if focal is not None and fov_deg is not None:
        raise ValueError("give focal or fov_deg, not both")
    if fov_deg is not None:
        if not 0 < fov_deg < 180:
            raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
        return fov_to_focal(fov_deg)
    if focal is not None:
        if not focal > 0:
            raise ValueError(f"focal must be positive, got {focal}")
        return float(focal)
    return FFHQ_FOCAL


def angle_pairs(yaws, pitches) -> tuple[np.ndarray, np.ndarray]:
    """Broadcast yaw and pitch (degrees; yaw in [-180, 180], pitch in (-90, 90)) to two equal-length
    float64 arrays ``(B,)``."""
    yaw, pitch = np.broadcast_arrays(np.atleast_1d(np.asarray(yaws, dtype=np.float64)),
                                     np.atleast_1d(np.asarray(pitches, dtype=np.float64)))
    if yaw.ndim != 1 or yaw.size == 0:
        raise ValueError(f"yaws and pitches must broadcast to a non-empty 1-D list, got shape {yaw.shape}")
    check_view_angles(yaw.tolist(), pitch.tolist())  # a ConfigError, which is a ValueError
    return yaw.copy(), pitch.copy()


__all__ = ["Scene", "resolve_focal", "angle_pairs"]
