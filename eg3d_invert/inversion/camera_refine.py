"""Small learned corrections of a camera label (joint camera refinement).

Poses of user photos come from landmark fits and are often a few degrees off; the inversion then
bends the face to match the wrong view and the 3D shape suffers. :class:`CameraCorrection` adds
six learnable numbers to a label -- yaw, pitch, roll and a translation -- stored in units of
their prior standard deviations so one Adam learning rate suits all six and the prior is simply
``0.5 * |delta|^2``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..camera import make_label, split_label


def axis_angle_matrix(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrix ``(3, 3)`` by ``angle`` (radians, right-handed) about ``axis (3,)`` (Rodrigues)."""
    k = axis / torch.linalg.norm(axis)
    zero = torch.zeros((), dtype=k.dtype, device=k.device)
    skew = torch.stack([torch.stack([zero, -k[2], k[1]]),
                        torch.stack([k[2], zero, -k[0]]),
                        torch.stack([-k[1], k[0], zero])])
    eye = torch.eye(3, dtype=k.dtype, device=k.device)
    return eye + torch.sin(angle) * skew + (1 - torch.cos(angle)) * (skew @ skew)


class CameraCorrection(nn.Module):
    """Learnable correction of camera labels, starting at the identity.

    Args:
        rotation_sigma_deg: prior std (degrees) of yaw, pitch and roll.
        translation_sigma: prior std (world units) of each translation component.
        pivot: ``(3,)`` point the yaw/pitch orbit turns about (the checkpoint's
            look-at point, :func:`~eg3d_invert.camera.camera_sphere`; ``[0, 0, 0.2]`` for FFHQ).

    Conventions: positive yaw moves the camera toward world +x and positive pitch moves it up
    (the geometric angles of :func:`eg3d_invert.camera.label_angles`), both orbiting ``pivot``;
    roll turns the camera about its own viewing axis (right-handed); the translation is along
    the camera's x (right), y (down), z (forward) axes.
    """

    def __init__(self, rotation_sigma_deg: float, translation_sigma: float, pivot):
        super().__init__()
        self.rotation_sigma = math.radians(rotation_sigma_deg)
        self.translation_sigma = float(translation_sigma)
        self.delta = nn.Parameter(torch.zeros(6))
        self.register_buffer("pivot", torch.as_tensor(pivot, dtype=torch.float32).reshape(3))

    @property
    def angles(self) -> torch.Tensor:
        """``(3,)`` yaw, pitch, roll in radians."""
        return self.delta[:3] * self.rotation_sigma

    @property
    def translation(self) -> torch.Tensor:
        """``(3,)`` translation along the camera's axes, world units."""
        return self.delta[3:] * self.translation_sigma

    def prior(self) -> torch.Tensor:
        """Negative log prior (up to a constant): ``0.5 * sum((delta / sigma)^2)``."""
        return 0.5 * (self.delta ** 2).sum()

    def forward(self, label: torch.Tensor) -> torch.Tensor:
        """Corrected labels ``(B, 25)`` from labels ``(B, 25)`` (intrinsics unchanged)."""
        cam2world, intrinsics = split_label(label)
        yaw, pitch, roll = self.angles.to(label.dtype)
        t = self.translation.to(label.dtype)
        pivot = self.pivot.to(label.dtype)
        y_axis = torch.tensor([0.0, 1.0, 0.0], dtype=label.dtype, device=label.device)
        z_axis = torch.tensor([0.0, 0.0, 1.0], dtype=label.dtype, device=label.device)
        out = []
        for m in cam2world:
            rot, pos = m[:3, :3], m[:3, 3]
            # Rotating about the camera's right axis by -pitch raises the camera (its y axis points down).
            orbit = axis_angle_matrix(rot[:, 0], -pitch) @ axis_angle_matrix(y_axis, yaw)
            new_rot = orbit @ rot @ axis_angle_matrix(z_axis, roll)
            new_pos = pivot + orbit @ (pos - pivot) + new_rot @ t
            top = torch.cat([new_rot, new_pos[:, None]], dim=1)
            out.append(torch.cat([top, m[3:]], dim=0))
        return make_label(torch.stack(out), intrinsics)

    def summary(self) -> dict[str, float | list[float]]:
        """The current correction in readable units (degrees and world units), and the point
        the yaw/pitch orbit turned about."""
        a = torch.rad2deg(self.angles.detach()).tolist()
        return {"yaw_deg": a[0], "pitch_deg": a[1], "roll_deg": a[2],
                "translation": [float(x) for x in self.translation.detach()],
                "pivot": [float(x) for x in self.pivot]}
