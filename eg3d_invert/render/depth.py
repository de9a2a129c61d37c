"""Depth maps: raw expected depth, accumulated opacity and a colour-mapped PNG.

**Depth** is EG3D's ``image_depth``: the compositing-weighted mean of the sample depths,
``sum_k w_k t_k / sum_k w_k``, i.e. the expected **distance along the unit ray** from the camera
centre (not camera-space z), in world units, at the neural rendering resolution. Like the
official renderer it is clamped to the range of the sample depths of the call. Because it is
normalised by the total weight, rays that hit almost nothing still get a depth; that is what the
opacity is for.

**Opacity** is the accumulated alpha ``sum_k w_k`` in ``[0, 1]`` (1 = the ray was stopped). The
generator does not return it, so :func:`march_depth` runs the official sampler density-only
(same coarse + importance samples, same compositing weights, no colour head): for
``deterministic=True`` its depth equals ``G.render(...)['image_depth']`` to float precision
(tested), and the opacity is exactly the renderer's.

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
from ..generator import rendering
from .scene import Scene, angle_pairs, resolve_focal
from .views import DEFAULT_PITCHES, DEFAULT_YAWS, Progress, save_png, view_stem

#: Opacity above which a pixel counts as foreground.
DEFAULT_OPACITY_THRESHOLD = 0.5


def march_depth(scene: Scene, labels: torch.Tensor, *, resolution: int | None = None, deterministic: bool = True,
                sample_mult: float = 2, generator: torch.Generator | None = None,
                max_points_per_chunk: int = 1 << 22) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected depth and opacity of every pixel ray, without colours or super-resolution.

    Args:
        labels: camera labels ``(B, 25)``.
        resolution: ray grid size ``r`` (default the generator's neural rendering resolution).
        deterministic, sample_mult, generator: as :meth:`TriPlaneGenerator.render`.
    Returns:
        ``depth (B, r, r)`` float32 (distance along the unit ray, clamped to the sample range of
        the call, as officially) and ``opacity (B, r, r)`` float32 in ``[0, 1]``.
    """
    G = scene.generator
    rk = G.rendering_kwargs
    if labels.ndim != 2 or labels.shape[1] < 25:
        raise ValueError(f"labels must be (B, 25), got {tuple(labels.shape)}")
    res = int(resolution or G.neural_rendering_resolution)
    n_coarse = int(rk["depth_resolution"] * sample_mult)
    n_fine = int(rk["depth_resolution_importance"] * sample_mult)
    clamp_mode = rk.get("clamp_mode", "softplus")
    labels = labels.to(device=scene.device, dtype=torch.float32)
    origins, dirs = rendering.generate_rays(labels[:, :16].reshape(-1, 4, 4), labels[:, 16:25].reshape(-1, 3, 3), res)
    bsz, n_rays = origins.shape[:2]
    chunk = max(1, max_points_per_chunk // (n_coarse + n_fine) // bsz)

    def density(o, d, t):
        pts = (o.unsqueeze(-2) + t.unsqueeze(-1) * d.unsqueeze(-2)).reshape(1, -1, 3)
        sigma = G.sample_planes(scene.planes, pts, need_rgb=False)["sigma"]
        return sigma.reshape(t.shape)

    depths, alphas, lo, hi = [], [], [], []
    with torch.no_grad():
        for s in range(0, n_rays, chunk):
            o, d = origins[:, s:s + chunk], dirs[:, s:s + chunk]
            t = rendering.stratified_depths(o, d, rk["ray_start"], rk["ray_end"], n_coarse, box_warp=rk["box_warp"],
                                            disparity_space=rk.get("disparity_space_sampling", False),
                                            deterministic=deterministic, generator=generator)
            sigma = density(o, d, t)
            if n_fine > 0:
                w = rendering.interval_weights(sigma, t, clamp_mode)
                t_fine = rendering.importance_depths(t, w, n_fine, deterministic=deterministic, generator=generator)
                t = torch.cat([t, t_fine], -1)
                sigma = torch.cat([sigma, density(o, d, t_fine)], -1)
                t, order = torch.sort(t, dim=-1)
                sigma = torch.gather(sigma, -1, order)
            w = rendering.interval_weights(sigma, t, clamp_mode)
            depths.append(rendering.composite_depth(w, t))
            alphas.append(w.sum(-1))
            lo.append(t.min())
            hi.append(t.max())
    depth = torch.clamp(torch.cat(depths, 1), torch.stack(lo).min(), torch.stack(hi).max())
    opacity = torch.cat(alphas, 1).clamp(0, 1)
    return depth.reshape(bsz, res, res), opacity.reshape(bsz, res, res)


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

    Arguments as :func:`eg3d_invert.render.views.render_views`; no super-resolution is run, so
    this costs a density-only pass at the neural rendering resolution.
    """
    yaw, pitch = angle_pairs(yaws, pitches)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    labels = scene.cameras(yaw, pitch, focal=resolve_focal(focal, fov_deg)).label
    depth, alpha = [], []
    for start in range(0, len(yaw), batch_size):
        d, a = march_depth(scene, labels[start:start + batch_size], resolution=resolution,
                           deterministic=deterministic, sample_mult=sample_mult, generator=generator)
        depth.append(d.cpu().numpy())
        alpha.append(a.cpu().numpy())
        if progress is not None:
            progress(min(start + batch_size, len(yaw)), len(yaw))
    return DepthMaps(np.concatenate(depth).astype(np.float32), np.concatenate(alpha).astype(np.float32), yaw, pitch)


__all__ = ["DepthMaps", "render_depth", "march_depth", "colorize_depth", "depth_range", "save_npy",
           "DEFAULT_OPACITY_THRESHOLD"]
