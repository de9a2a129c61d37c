"""What a run renders into each result folder, with the official defaults: :class:`RenderOptions`.

The defaults are those of the official scripts: five views at eye level, depth samples x2
(``gen_videos.py``'s ``--sample_mult``), one 120-frame orbit at 60 fps (``gen_videos.py``), a
mesh at density level 10 (``gen_samples.py --shapes``), here on a 256^3 lattice (the official
512^3 is visually close and 8x dearer). The renderer (:mod:`eg3d_invert.render`) uses the
same constants.

This module imports neither torch nor the renderer, so the command line can show these
defaults without loading either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ConfigError

#: Views rendered when the caller gives none: a turntable from the right to the left profile
#: side at eye level, within the pose range FFHQ covers well (geometric degrees).
DEFAULT_YAWS = (-30.0, -15.0, 0.0, 15.0, 30.0)
DEFAULT_PITCHES = (0.0,)
#: ``gen_videos.py`` defaults: frames per keyframe (one keyframe for one subject) and frame rate.
DEFAULT_FRAMES = 120
DEFAULT_FPS = 60
#: The official iso-level of the raw density (``gen_samples.py``; its README: "optimal level,
#: usually between 2 and 20") and our default lattice size.
DEFAULT_MESH_LEVEL = 10.0
DEFAULT_MESH_RESOLUTION = 256
#: Mesh file formats written (all carry per-vertex colours).
MESH_FORMATS = ("ply", "obj", "glb")
DEFAULT_MESH_FORMATS = ("ply",)
#: Depth-sample multiplier of final renders (``gen_videos.py``'s default: less banding).
RENDER_SAMPLE_MULT = 2.0
#: View angles: yaw within [-180, 180], pitch strictly within (-90, 90) (straight above or below
#: the camera's up direction is undefined).
MAX_YAW_DEG = 180.0
MAX_PITCH_DEG = 90.0


def check_view_angles(yaws, pitches) -> None:
    """Raise ConfigError unless every yaw is a finite angle in [-180, 180] and every pitch one in
    (-90, 90): anything else is a mistake (a yaw of 200 is a yaw of -160 written another way)."""
    for y, p in zip(yaws, pitches):
        if not (math.isfinite(y) and math.isfinite(p)):
            raise ConfigError(f"views: angles must be finite numbers, got yaw {y}, pitch {p}")
        if abs(y) > MAX_YAW_DEG:
            raise ConfigError(f"views: yaw {y:g} is outside [-{MAX_YAW_DEG:g}, {MAX_YAW_DEG:g}] degrees")
        if abs(p) >= MAX_PITCH_DEG:
            raise ConfigError(f"views: pitch {p:g} is outside (-{MAX_PITCH_DEG:g}, {MAX_PITCH_DEG:g}) degrees")


def parse_views(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``'-30,0,30:10'`` -> yaws ``(-30, 0, 30)``, pitches ``(0, 0, 10)``; ``'none'`` -> no views.

    Each comma-separated item is ``YAW`` or ``YAW:PITCH`` in geometric degrees (yaw toward the
    subject's left, pitch with the camera above).

    Raises:
        ConfigError: an item is not one or two numbers, or an angle is out of range.
    """
    text = text.strip()
    if text.lower() in ("", "none"):
        return (), ()
    yaws, pitches = [], []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            if len(parts) > 2:
                raise ValueError
            yaw = float(parts[0])
            pitch = float(parts[1]) if len(parts) == 2 else 0.0
        except ValueError:
            raise ConfigError(f"views: {item.strip()!r} is not YAW or YAW:PITCH in degrees "
                              f"(e.g. --views=-30,0,30:10)") from None
        yaws.append(yaw)
        pitches.append(pitch)
    check_view_angles(yaws, pitches)
    return tuple(yaws), tuple(pitches)


def format_views(yaws, pitches) -> str:
    """The ``--views`` text of angles (inverse of :func:`parse_views`), for help texts."""
    if not yaws:
        return "none"
    return ",".join(f"{y:g}" if p == 0 else f"{y:g}:{p:g}" for y, p in zip(yaws, pitches))


def parse_mesh_formats(text: str) -> tuple[str, ...]:
    """``'ply,obj'`` -> ``('ply', 'obj')``; ``'none'`` -> no mesh (checked by :class:`RenderOptions`)."""
    text = text.strip().lower()
    return () if text in ("", "none") else tuple(f.strip() for f in text.split(","))


@dataclass(frozen=True)
class RenderOptions:
    """What is rendered into a result folder.

    Attributes:
        yaws, pitches: the views, geometric degrees, same length (empty: no views, no depth).
        depth: also write the depth maps of the views.
        video: write ``orbit.mp4`` with ``frames`` frames at ``fps``.
        mesh_formats: mesh files to write (``'ply'``, ``'obj'``, ``'glb'``); empty: no mesh.
        mesh_resolution: lattice points per axis of the marching cubes.
        mesh_level: iso-level of the raw density (official 10).
        sample_mult: depth-sample multiplier of views, depth and video (official videos: 2).
    """

    yaws: tuple[float, ...] = DEFAULT_YAWS
    pitches: tuple[float, ...] = DEFAULT_PITCHES * len(DEFAULT_YAWS)
    depth: bool = True
    video: bool = True
    frames: int = DEFAULT_FRAMES
    fps: float = float(DEFAULT_FPS)
    mesh_formats: tuple[str, ...] = DEFAULT_MESH_FORMATS
    mesh_resolution: int = DEFAULT_MESH_RESOLUTION
    mesh_level: float = DEFAULT_MESH_LEVEL
    sample_mult: float = RENDER_SAMPLE_MULT

    def __post_init__(self):
        object.__setattr__(self, "yaws", tuple(float(v) for v in self.yaws))
        object.__setattr__(self, "pitches", tuple(float(v) for v in self.pitches))
        object.__setattr__(self, "mesh_formats", tuple(dict.fromkeys(str(f).lower() for f in self.mesh_formats)))
        if len(self.yaws) != len(self.pitches):
            raise ConfigError(f"views: {len(self.yaws)} yaws but {len(self.pitches)} pitches")
        check_view_angles(self.yaws, self.pitches)
        for name in ("frames", "mesh_resolution"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.mesh_resolution < 8:
            raise ConfigError(f"mesh_resolution must be at least 8, got {self.mesh_resolution}")
        for name in ("fps", "sample_mult"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"{name} must be a positive number, got {v!r}")
        if not math.isfinite(self.mesh_level):
            raise ConfigError(f"mesh_level must be finite, got {self.mesh_level!r}")
        bad = [f for f in self.mesh_formats if f not in MESH_FORMATS]
        if bad:
            raise ConfigError(f"mesh format {bad[0]!r} unknown; use {', '.join(MESH_FORMATS)} or none")

    def to_dict(self) -> dict[str, Any]:
        return {"yaws": list(self.yaws), "pitches": list(self.pitches), "depth": self.depth, "video": self.video,
                "frames": self.frames, "fps": float(self.fps), "mesh_formats": list(self.mesh_formats),
                "mesh_resolution": self.mesh_resolution, "mesh_level": float(self.mesh_level),
                "sample_mult": float(self.sample_mult)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RenderOptions":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


__all__ = ["RenderOptions", "parse_views", "format_views", "parse_mesh_formats", "check_view_angles",
           "DEFAULT_YAWS", "DEFAULT_PITCHES", "DEFAULT_FRAMES", "DEFAULT_FPS", "DEFAULT_MESH_LEVEL",
           "DEFAULT_MESH_RESOLUTION", "DEFAULT_MESH_FORMATS", "MESH_FORMATS", "RENDER_SAMPLE_MULT"]
