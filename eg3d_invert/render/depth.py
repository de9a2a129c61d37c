"""Depth maps: raw expected depth, accumulated opacity and a colour-mapped PNG.

**Depth** is EG3D's ``image_depth``: the compositing-weighted mean of the sample depths,
``sum_k w_k t_k / sum_k w_k``, i.e. the expected **distance along the unit ray** from the camera
centre (not camera-space z), in world units, at the neural rendering resolution. Like the
official renderer it is clamped to the range of the sample depths of the call. Because it is
normalised by the total weight, rays that hit almost nothing still get a depth; that is what the
opacity is for.

**Opacity** is the accumulated alpha ``sum_k w_k`` in ``[0, 1]`` (1 = the ray was stopped), which
the generator's ray marcher returns with every render (``image_opacity``; the official renderer
computes it and drops it). Depth and opacity therefore come with the views for free
(:meth:`ViewSet.depth_maps <eg3d_invert.render.views.ViewSet.depth_maps>`); :func:`render_depth`
renders them alone, skipping the super-resolution.

**Colour mapping** (:func:`colorize_depth`): ``t = (far - depth) / (far - near)`` clipped to
``[0, 1]`` through matplotlib's ``inferno`` (perceptually uniform, lightness increasing), so
**nearer is brighter**, as in ``gen_videos.py``'s depth videos (negated depth, min-max
normalised). ``near`` and ``far`` are the 1st and 99th percentiles of the depth over the
foreground (opacity >= threshold) of all maps together, which keeps one colour scale across
views and ignores stray background rays; background pixels are black.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import PIL.Image
import torch

from .._io import atomic_path
from .scene import Scene, angle_pairs, resolve_focal
from .views import DEFAULT_PITCHES, DEFAULT_YAWS, Progress, ViewSet, render_batches, save_png, view_stem

#: Opacity above which a pixel counts as foreground.
DEFAULT_OPACITY_THRESHOLD = 0.5


def depth_range(depth: np.ndarray, mask: np.ndarray | None = None,
                percentiles: tuple[float, float] = (1.0, 99.0)) -> tuple[float, float]:
    """Robust ``(near, far)`` of ``depth`` over ``mask`` (all finite pixels if the mask is empty)."""
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(depth)
    if mask is not None and (valid & mask).any():
        valid &= np.asarray(mask, dtype=bool)
    if not valid.any():
        return 0.0, 1.0
    near, far = np.percentile(depth[valid], percentiles)
    if not far > near:
        far = near + 1e-6
    return float(near), float(far)


def colorize_depth(depth: np.ndarray, mask: np.ndarray | None = None, *, near: float | None = None,
                   far: float | None = None, cmap: str = "inferno",
                   background: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Depth ``(..., H, W)`` -> ``(..., H, W, 3)`` uint8, nearer brighter (see the module docstring).

    ``near``/``far`` default to the robust range of the foreground (:func:`depth_range`);
    pixels outside ``mask`` get ``background``.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if near is None or far is None:
        n, f = depth_range(depth, mask)
        near = n if near is None else near
        far = f if far is None else far
    t = np.clip((far - np.nan_to_num(depth, nan=far, posinf=far, neginf=near)) / max(far - near, 1e-12), 0, 1)
    rgb = (matplotlib.colormaps[cmap](t)[..., :3] * 255 + 0.5).astype(np.uint8)
    if mask is not None:
        rgb[~np.asarray(mask, dtype=bool)] = background
    return rgb


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class DepthMaps:
    """Depth and opacity of a set of views.

    Attributes:
        depth: ``(B, r, r)`` float32, distance along the unit ray in world units.
        opacity: ``(B, r, r)`` float32 accumulated alpha in ``[0, 1]``.
        yaws, pitches: ``(B,)`` float64 geometric degrees.
    """

    depth: np.ndarray
    opacity: np.ndarray
    yaws: np.ndarray
    pitches: np.ndarray

    @classmethod
    def from_views(cls, views: ViewSet) -> "DepthMaps":
        """The depth and opacity that came with rendered views (no rendering)."""
        return cls(views.depth, views.opacity, views.yaws, views.pitches)

    def __len__(self) -> int:
        return self.depth.shape[0]

    def mask(self, threshold: float = DEFAULT_OPACITY_THRESHOLD) -> np.ndarray:
        """Foreground ``(B, r, r)`` bool: opacity >= ``threshold``."""
        return self.opacity >= threshold

    def range(self, threshold: float = DEFAULT_OPACITY_THRESHOLD) -> tuple[float, float]:
        """The shared ``(near, far)`` used by :meth:`colorize`."""
        return depth_range(self.depth, self.mask(threshold))

    def colorize(self, threshold: float | None = DEFAULT_OPACITY_THRESHOLD, cmap: str = "inferno",
                 size: int | None = None) -> list[PIL.Image.Image]:
        """Colour-mapped depth images, one scale for all views; ``threshold=None`` keeps the background.

        ``size`` resamples (bicubic) to ``size x size`` for display next to the final renders.
        """
        mask = self.mask(threshold) if threshold is not None else None
        near, far = depth_range(self.depth, mask)
        rgb = colorize_depth(self.depth, mask, near=near, far=far, cmap=cmap)
        ims = [PIL.Image.fromarray(a, "RGB") for a in rgb]
        if size is not None:
            ims = [im.resize((size, size), PIL.Image.Resampling.BICUBIC) for im in ims]
        return ims

    def save(self, directory: str | Path, *, threshold: float | None = DEFAULT_OPACITY_THRESHOLD,
             cmap: str = "inferno", save_opacity: bool = True) -> list[Path]:
        """Write ``{view}.png`` (colour map), ``{view}.npy`` (raw depth, float32) and, if asked,
        ``{view}_opacity.npy`` per view, atomically. Returns the written paths."""
        directory = Path(directory)
        paths = []
        for k, im in enumerate(self.colorize(threshold, cmap)):
            stem = view_stem(self.yaws[k], self.pitches[k])
            paths.append(save_png(im, directory / f"{stem}.png"))
            paths.append(save_npy(self.depth[k], directory / f"{stem}.npy"))
            if save_opacity:
                paths.append(save_npy(self.opacity[k], directory / f"{stem}_opacity.npy"))
        return paths


def save_npy(array: np.ndarray, path: str | Path) -> Path:
    """``np.save`` atomically (the temporary keeps the ``.npy`` suffix, so numpy adds none)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array))
    return path


def render_depth(scene: Scene, yaws=DEFAULT_YAWS, pitches=DEFAULT_PITCHES, *, resolution: int | None = None,
                 focal: float | None = None, fov_deg: float | None = None, deterministic: bool = True,
                 sample_mult: float = 2, batch_size: int = 4, generator: torch.Generator | None = None,
                 progress: Progress | None = None) -> DepthMaps:
    """Depth and opacity maps from every ``(yaw, pitch)`` pair (degrees, broadcast).

    Arguments as :func:`eg3d_invert.render.views.render_views`; the super-resolution is skipped,
    so this costs the ray marching at the neural rendering resolution only. Views rendered with
    the same arguments carry the same maps (:meth:`ViewSet.depth_maps`).
    """
    yaw, pitch = angle_pairs(yaws, pitches)
    labels = scene.cameras(yaw, pitch, focal=resolve_focal(focal, fov_deg)).label
    depth, alpha = [], []
    for _, out in render_batches(scene, labels, resolution=resolution, deterministic=deterministic,
                                 sample_mult=sample_mult, batch_size=batch_size, generator=generator,
                                 run_superresolution=False, progress=progress):
        depth.append(out["image_depth"][:, 0].float().cpu().numpy())
        alpha.append(out["image_opacity"][:, 0].float().cpu().numpy())
    return DepthMaps(np.concatenate(depth), np.concatenate(alpha), yaw, pitch)


__all__ = ["DepthMaps", "render_depth", "colorize_depth", "depth_range", "save_npy", "DEFAULT_OPACITY_THRESHOLD"]
