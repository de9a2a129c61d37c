"""EG3D cameras: poses, intrinsics and the 25-number label.

Conventions (those of the official EG3D code and its FFHQ labels):

* **World**: +y up, the face looks toward +z, the subject's left is +x. The tri-plane box is
  ``[-box_warp/2, box_warp/2]^3`` (``[-0.5, 0.5]^3`` for FFHQ).
* **Extrinsics**: OpenCV *camera-to-world* ``(..., 4, 4)``. Rotation columns are the camera's
  x (image right), y (image **down**) and z (viewing direction) axes in world coordinates; the
  last column is the camera centre.
* **Intrinsics**: normalised by the image size, ``[[f, 0, cx], [0, f, cy], [0, 0, 1]]`` with
  ``cx = cy = 0.5``, so they hold for any resolution.
* **Label** ``c`` ``(..., 25)``: ``cam2world`` flattened row-major (16) then ``intrinsics``
  flattened row-major (9). The generator uses it both as the rendering camera and, for FFHQ, as
  the mapping network's conditioning input.

Two angle conventions occur and both are offered:

* the official sampler's (radians): :func:`lookat_pose` takes ``horizontal = pi/2 + yaw`` and
  ``vertical = pi/2 + pitch`` exactly like ``LookAtPoseSampler.sample``, including its
  area-uniform mapping ``phi = arccos(1 - 2 v/pi)``; there a positive ``pitch`` puts the camera
  *below* the face;
* geometric angles in degrees (the public API, and how :func:`label_angles` reads FFHQ labels):
  ``yaw`` is the azimuth ``atan2(x, z)`` of the camera centre (positive: camera toward +x, face
  turned toward image-left) and ``pitch`` its elevation ``asin(y / |t|)`` (positive: camera
  above the head). :func:`camera_from_angles` builds such a camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

#: Normalised focal length of the FFHQ labels: 2985.29 px on the 700 px centre crop.
FFHQ_FOCAL = 4.2647
#: Field of view (degrees) of the official scripts; with :func:`fov_to_focal` it gives 4.263391.
DEFAULT_FOV_DEG = 18.837
#: FFHQ camera sphere radius and look-at point (``rendering_kwargs`` of the FFHQ models).
FFHQ_RADIUS = 2.7
FFHQ_PIVOT = (0.0, 0.0, 0.2)
#: What the official scripts (``gen_samples.py``, ``gen_videos.py``) use when a checkpoint's
#: ``rendering_kwargs`` do not name ``avg_camera_pivot`` / ``avg_camera_radius``.
OFFICIAL_DEFAULT_PIVOT = (0.0, 0.0, 0.0)
OFFICIAL_DEFAULT_RADIUS = 2.7

_Array = torch.Tensor | np.ndarray | Sequence[float]


def _as_tensor(x, dtype=None, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device if device is not None else x.device, dtype=dtype or x.dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype or torch.float32, device=device)


def camera_sphere(generator) -> tuple[tuple[float, float, float], float]:
    """Where a generator's cameras sit: ``(lookat, radius)``.

    Cameras lie on the sphere of ``radius`` about the world origin and look at ``lookat``: the
    checkpoint's ``avg_camera_pivot`` and ``avg_camera_radius`` (``(0, 0, 0.2)`` and 2.7 for
    FFHQ), or the official scripts' defaults when it names none. Every camera of this package
    (conditioning, refinement, views, video) is placed with it.

    Raises:
        ConfigError: the checkpoint's values are not three finite numbers and a positive radius.
    """
    from .errors import ConfigError

    rk = generator.rendering_kwargs
    lookat, radius = rk.get("avg_camera_pivot", OFFICIAL_DEFAULT_PIVOT), rk.get("avg_camera_radius",
                                                                                 OFFICIAL_DEFAULT_RADIUS)
    try:
        lookat = tuple(float(v) for v in lookat)
        radius = float(radius)
    except (TypeError, ValueError):
        lookat, radius = (), math.nan
    if len(lookat) != 3 or not all(map(math.isfinite, lookat)) or not (math.isfinite(radius) and radius > 0):
        raise ConfigError(f"the checkpoint's camera sphere is invalid: avg_camera_pivot "
                          f"{rk.get('avg_camera_pivot')!r}, avg_camera_radius {rk.get('avg_camera_radius')!r}")
    return lookat, radius


def fov_to_focal(fov_deg: float) -> float:
    """Normalised focal length for a field of view in degrees, as EG3D computes it.

    The official ``FOV_to_intrinsics`` uses the literals 3.14159 and 1.414 (not pi and
    sqrt(2)); they are kept so that 18.837 degrees gives the official 4.263391.
    """
    return float(1.0 / (math.tan(fov_deg * 3.14159 / 360.0) * 1.414))


def focal_to_fov(focal: float) -> float:
    """Inverse of :func:`fov_to_focal` (degrees)."""
    return float(math.atan(1.0 / (focal * 1.414)) * 360.0 / 3.14159)


def intrinsics_matrix(focal: float = FFHQ_FOCAL, cx: float = 0.5, cy: float = 0.5,
                      device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised intrinsics ``(3, 3)``: ``[[f, 0, cx], [0, f, cy], [0, 0, 1]]``."""
    return torch.tensor([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]], device=device, dtype=dtype)


def fov_to_intrinsics(fov_deg: float = DEFAULT_FOV_DEG, device=None) -> torch.Tensor:
    """Normalised intrinsics ``(3, 3)`` for a field of view, as ``camera_utils.FOV_to_intrinsics``."""
    return intrinsics_matrix(fov_to_focal(fov_deg), device=device)


def _normalize(v: torch.Tensor) -> torch.Tensor:
    return v / torch.norm(v, dim=-1, keepdim=True)


def cam2world_from_forward(forward: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """OpenCV cam2world ``(..., 4, 4)`` for a camera at ``origin`` looking along ``forward``.

    No roll: the camera's x axis is horizontal (orthogonal to world +y), so for an upright view
    its y axis points world-down. ``forward`` and ``origin`` are ``(..., 3)``.
    """
    forward = _normalize(forward)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=forward.dtype, device=forward.device).expand_as(forward)
    right = -_normalize(torch.cross(up, forward, dim=-1))
    down = _normalize(torch.cross(forward, right, dim=-1))
    pose = torch.zeros(forward.shape[:-1] + (4, 4), dtype=forward.dtype, device=forward.device)
    pose[..., :3, :3] = torch.stack((right, down, forward), dim=-1)
    pose[..., :3, 3] = origin
    pose[..., 3, 3] = 1.0
    return pose


def lookat_pose(horizontal, vertical, lookat: _Array = FFHQ_PIVOT, radius: float = FFHQ_RADIUS,
                device=None) -> torch.Tensor:
    """The official ``LookAtPoseSampler.sample`` (zero stddev): cam2world ``(N, 4, 4)``.

    Args:
        horizontal: azimuth in radians, scalar or ``(N,)``; ``pi/2`` is frontal.
        vertical: polar parameter in radians, scalar or ``(N,)``; ``pi/2`` is level. It is mapped
            through ``phi = arccos(1 - 2 v/pi)`` (the official area-uniform mapping), so
            ``pi/2 + p`` puts the camera at height ``-2 r p / pi``: positive ``p`` is *below*.
        lookat: the point the camera looks at, ``(3,)``.
        radius: distance of the camera from the **world origin** (not from ``lookat``).
    """
    h = _as_tensor(horizontal, dtype=torch.float32, device=device).reshape(-1, 1)
    v = _as_tensor(vertical, dtype=torch.float32, device=device).reshape(-1, 1)
    h, v = torch.broadcast_tensors(h, v)
    v = torch.clamp(v, 1e-5, math.pi - 1e-5) / math.pi
    phi = torch.arccos(1 - 2 * v)
    origin = torch.cat([
        radius * torch.sin(phi) * torch.cos(math.pi - h),
        radius * torch.cos(phi),
        radius * torch.sin(phi) * torch.sin(math.pi - h),
    ], dim=-1)
    target = _as_tensor(lookat, dtype=torch.float32, device=origin.device)
    return cam2world_from_forward(_normalize(target - origin), origin)


def camera_from_angles(yaw_deg=0.0, pitch_deg=0.0, radius: float = FFHQ_RADIUS,
                       lookat: _Array = FFHQ_PIVOT, device=None) -> torch.Tensor:
    """cam2world ``(N, 4, 4)`` from geometric angles in degrees.

    The camera sits on the sphere of ``radius`` about the world origin at azimuth ``yaw_deg``
    (positive toward +x, the subject's left) and elevation ``pitch_deg`` (positive above the
    head), looking at ``lookat``; :func:`label_angles` reads these angles back.
    """
    yaw = torch.deg2rad(_as_tensor(yaw_deg, dtype=torch.float64)).reshape(-1)
    pitch = torch.deg2rad(_as_tensor(pitch_deg, dtype=torch.float64)).reshape(-1)
    yaw, pitch = torch.broadcast_tensors(yaw, pitch)
    # Elevation e is reached by the official sampler with vertical = pi/2 - (pi/2) sin(e).
    vertical = math.pi / 2 - (math.pi / 2) * torch.sin(pitch)
    return lookat_pose((math.pi / 2 + yaw).float(), vertical.float(), lookat, radius, device=device)


def make_label(cam2world: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """25-number labels ``(..., 25)`` from cam2world ``(..., 4, 4)`` and intrinsics ``(..., 3, 3)``."""
    cam2world = torch.as_tensor(cam2world)
    intrinsics = torch.as_tensor(intrinsics, dtype=cam2world.dtype, device=cam2world.device)
    if cam2world.shape[-2:] != (4, 4) or intrinsics.shape[-2:] != (3, 3):
        raise ValueError(f"expected cam2world (...,4,4) and intrinsics (...,3,3), got "
                         f"{tuple(cam2world.shape)} and {tuple(intrinsics.shape)}")
    batch = torch.broadcast_shapes(cam2world.shape[:-2], intrinsics.shape[:-2])
    return torch.cat([cam2world.expand(batch + (4, 4)).reshape(batch + (16,)),
                      intrinsics.expand(batch + (3, 3)).reshape(batch + (9,))], dim=-1)


def split_label(label) -> tuple[torch.Tensor, torch.Tensor]:
    """cam2world ``(..., 4, 4)`` and intrinsics ``(..., 3, 3)`` from labels ``(..., 25)``."""
    label = _as_tensor(label)
    if label.shape[-1] != 25:
        raise ValueError(f"a camera label has 25 numbers, got shape {tuple(label.shape)}")
    return label[..., :16].reshape(label.shape[:-1] + (4, 4)), label[..., 16:].reshape(label.shape[:-1] + (3, 3))


def flip_yaw(label):
    """Label of the horizontally mirrored image: ``M' = S M S`` with ``S = diag(-1, 1, 1, 1)``.

    Works on labels ``(..., 25)`` (intrinsics unchanged) and cam2world ``(..., 4, 4)``; returns
    the same type (numpy or torch) it was given.
    """
    is_np = isinstance(label, np.ndarray) or not isinstance(label, torch.Tensor)
    t = _as_tensor(label).clone()
    mat = t if t.shape[-2:] == (4, 4) else t[..., :16].reshape(t.shape[:-1] + (4, 4))
    sign = torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=t.dtype, device=t.device)
    flipped = mat * sign[:, None] * sign[None, :]
    if t.shape[-2:] != (4, 4):
        t[..., :16] = flipped.reshape(t.shape[:-1] + (16,))
        flipped = t
    return flipped.cpu().numpy() if is_np else flipped


def label_angles(label) -> tuple[np.ndarray, np.ndarray]:
    """Geometric yaw and pitch (degrees) of the camera centre of labels or cam2world matrices.

    ``yaw = atan2(t_x, t_z)``, ``pitch = asin(t_y / |t|)``: the convention of the FFHQ labels'
    analysis (positive yaw: camera toward +x; positive pitch: camera above the head).
    """
    t = _as_tensor(label, dtype=torch.float64)
    mat = t if t.shape[-2:] == (4, 4) else t[..., :16].reshape(t.shape[:-1] + (4, 4))
    pos = mat[..., :3, 3].cpu().numpy()
    yaw = np.degrees(np.arctan2(pos[..., 0], pos[..., 2]))
    pitch = np.degrees(np.arcsin(np.clip(pos[..., 1] / np.linalg.norm(pos, axis=-1), -1, 1)))
    return yaw, pitch


def orbit_poses(num_frames: int, yaw_range: float = 0.35, pitch_range: float = 0.25,
                lookat: _Array = FFHQ_PIVOT, radius: float = FFHQ_RADIUS, device=None) -> torch.Tensor:
    """The camera path of ``gen_videos.py``: cam2world ``(num_frames, 4, 4)``, one loop.

    Frame ``i`` of ``n`` uses ``horizontal = 3.14/2 + yaw_range sin(2*3.14 i/n)`` and
    ``vertical = 3.14/2 - 0.05 + pitch_range cos(2*3.14 i/n)`` with the official sampler; the
    script writes 3.14, not pi, and so does this path.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    t = np.arange(num_frames, dtype=np.float64) / num_frames
    h = 3.14 / 2 + yaw_range * np.sin(2 * 3.14 * t)
    v = 3.14 / 2 - 0.05 + pitch_range * np.cos(2 * 3.14 * t)
    return lookat_pose(h.astype(np.float32), v.astype(np.float32), lookat, radius, device=device)


@dataclass(frozen=True)
class Camera:
    """A batch of EG3D cameras.

    Attributes:
        cam2world: ``(B, 4, 4)`` float32, OpenCV camera-to-world.
        intrinsics: ``(B, 3, 3)`` float32, normalised by image size.
    """

    cam2world: torch.Tensor
    intrinsics: torch.Tensor

    def __post_init__(self):
        if self.cam2world.ndim != 3 or self.cam2world.shape[1:] != (4, 4):
            raise ValueError(f"cam2world must be (B,4,4), got {tuple(self.cam2world.shape)}")
        if self.intrinsics.shape != (self.cam2world.shape[0], 3, 3):
            raise ValueError(f"intrinsics must be ({self.cam2world.shape[0]},3,3), got {tuple(self.intrinsics.shape)}")

    @classmethod
    def from_label(cls, label) -> "Camera":
        """Cameras from labels ``(25,)`` or ``(B, 25)``."""
        c2w, k = split_label(_as_tensor(label, dtype=torch.float32).reshape(-1, 25))
        return cls(c2w, k)

    @classmethod
    def from_angles(cls, yaw_deg=0.0, pitch_deg=0.0, focal: float = FFHQ_FOCAL,
                    radius: float = FFHQ_RADIUS, lookat: _Array = FFHQ_PIVOT, device=None) -> "Camera":
        """Cameras at geometric angles in degrees (see :func:`camera_from_angles`)."""
        c2w = camera_from_angles(yaw_deg, pitch_deg, radius, lookat, device=device)
        k = intrinsics_matrix(focal, device=c2w.device).expand(c2w.shape[0], 3, 3)
        return cls(c2w, k.contiguous())

    @property
    def label(self) -> torch.Tensor:
        """Labels ``(B, 25)``."""
        return make_label(self.cam2world, self.intrinsics)

    def __len__(self) -> int:
        return self.cam2world.shape[0]

    def to(self, device) -> "Camera":
        return Camera(self.cam2world.to(device), self.intrinsics.to(device))

    def flip_yaw(self) -> "Camera":
        return Camera(flip_yaw(self.cam2world), self.intrinsics.clone())

    @property
    def angles(self) -> tuple[np.ndarray, np.ndarray]:
        """Geometric (yaw, pitch) in degrees, as :func:`label_angles`."""
        return label_angles(self.cam2world)
