"""Volume rendering of tri-planes: rays, depth sampling, plane lookup and compositing.

Pure functions over batched tensors, on the inputs' device and dtype. They reproduce the
official ``RaySampler``, ``ImportanceRenderer`` and ``MipRayMarcher2`` (see FORMAT.md of the
reference data for the algorithm), organised for speed and memory:

* features stay channels-first ``(B, C, P)`` from ``grid_sample`` through the decoder to the
  compositor, so no ``(P, C)`` transposed copies are made;
* compositing never materialises the per-interval colours ``(c_k + c_{k+1}) / 2``: the weights
  are folded onto the samples and the colours are reduced in their original (unsorted) order,
  so the 32-channel features are neither gathered nor sorted.

Conventions: rays are ordered row-major (index ``i * R + j`` for image row ``i``, column ``j``);
depths are distances along *unit* ray directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


# --- rays ---------------------------------------------------------------------------------------


def generate_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre rays of a ``resolution``-square image.

    Args:
        cam2world: ``(B, 4, 4)`` OpenCV camera-to-world.
        intrinsics: ``(B, 3, 3)`` normalised intrinsics (may include skew).
    Returns:
        origins ``(B, R*R, 3)`` and unit directions ``(B, R*R, 3)``.
    """
    b = cam2world.shape[0]
    dev = cam2world.device
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy, sk = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
    # Same arithmetic as the official sampler (index * 1/R + 0.5/R), for bitwise-equal rays.
    idx = torch.arange(resolution, dtype=torch.float32, device=dev) * (1.0 / resolution) + (0.5 / resolution)
    y_img = idx.repeat_interleave(resolution)[None].expand(b, -1)  # row coordinate, grows downward
    x_img = idx.repeat(resolution)[None].expand(b, -1)             # column coordinate
    z = torch.ones_like(x_img)
    x_lift = (x_img - cx + cy * sk / fy - sk * y_img / fy) / fx * z
    y_lift = (y_img - cy) / fy * z
    cam_points = torch.stack((x_lift, y_lift, z, torch.ones_like(z)), dim=-1)
    world = torch.bmm(cam2world.to(torch.float32), cam_points.permute(0, 2, 1)).permute(0, 2, 1)[:, :, :3]
    origins = cam2world[:, :3, 3].to(torch.float32)
    dirs = F.normalize(world - origins[:, None, :], dim=2)
    return origins[:, None, :].expand(-1, dirs.shape[1], -1), dirs


def ray_box_limits(origins: torch.Tensor, dirs: torch.Tensor, box_side: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays through the cube ``[-box_side/2, box_side/2]^3``.

    Slab method; rays that miss get (-1, -2), as in the official ``get_ray_limits_box``.
    Shapes ``(..., 3)`` -> ``(..., 1)`` each.
    """
    half = box_side / 2
    inv = 1.0 / dirs.detach()
    o = origins.detach()
    t0 = (-half - o) * inv
    t1 = (half - o) * inv
    tmin_axes, tmax_axes = torch.minimum(t0, t1), torch.maximum(t0, t1)
    tmin, tmax = tmin_axes[..., 0], tmax_axes[..., 0]
    valid = torch.ones_like(tmin, dtype=torch.bool)
    for axis in (1, 2):
        valid &= ~((tmin > tmax_axes[..., axis]) | (tmin_axes[..., axis] > tmax))
        tmin = torch.maximum(tmin, tmin_axes[..., axis])
        tmax = torch.minimum(tmax, tmax_axes[..., axis])
    tmin = torch.where(valid, tmin, torch.full_like(tmin, -1.0))
    tmax = torch.where(valid, tmax, torch.full_like(tmax, -2.0))
    return tmin[..., None], tmax[..., None]


# --- depth sampling -----------------------------------------------------------------------------


def stratified_depths(origins: torch.Tensor, dirs: torch.Tensor, ray_start, ray_end, num: int, *,
                      box_warp: float = 1.0, disparity_space: bool = False, deterministic: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Coarse depths ``(B, R, num)``, sorted along each ray.

    Official sampling: ``linspace(ray_start, ray_end, num)`` plus a uniform jitter of one
    interval per sample. ``deterministic=True`` drops the jitter (reference mode). With
    ``ray_start == ray_end == 'auto'`` (ShapeNet) the range is each ray's intersection with the
    tri-plane box; rays that miss get the range of the rays that hit.
    """
    b, r, _ = origins.shape
    dev = origins.device

    def jitter(shape):
        return torch.rand(shape, device=dev, generator=generator) if not deterministic else None

    if ray_start == "auto" or ray_end == "auto":
        start, end = ray_box_limits(origins, dirs, box_warp)
        valid = end > start
        if bool(valid.any()):
            start = torch.where(valid, start, start[valid].min())
            end = torch.where(valid, end, start[valid].max())  # (sic) the official fallback uses start's max
        steps = torch.arange(num, dtype=torch.float32, device=dev) / (num - 1)
        depths = start + steps * (end - start)
        u = jitter(depths.shape)
        if u is not None:
            depths = depths + u * ((end - start) / (num - 1))
        return depths
    if disparity_space:
        depths = torch.linspace(0, 1, num, device=dev).reshape(1, 1, num).repeat(b, r, 1)
        u = jitter(depths.shape)
        if u is not None:
            depths = depths + u * (1 / (num - 1))
        return 1.0 / (1.0 / ray_start * (1.0 - depths) + 1.0 / ray_end * depths)
    depths = torch.linspace(ray_start, ray_end, num, device=dev).reshape(1, 1, num).repeat(b, r, 1)
    u = jitter(depths.shape)
    if u is not None:
        depths = depths + u * ((ray_end - ray_start) / (num - 1))
    return depths


def importance_depths(depths: torch.Tensor, weights: torch.Tensor, num: int, *, deterministic: bool = False,
                      generator: torch.Generator | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Fine depths ``(B, R, num)`` drawn from the coarse compositing weights (NeRF-style).

    ``depths (B, R, D)`` coarse samples; ``weights (B, R, D-1)`` their interval weights. The
    weights are max-filtered, averaged and offset by 0.01 exactly as the official renderer does,
    and only ``bins[0..D-3]`` can be chosen (the official pdf covers D-3 bins). In deterministic
    mode ``u = linspace(0, 1, num)`` (the official ``det=True``); otherwise uniform random.
    """
    with torch.no_grad():
        b, r, d = depths.shape
        z = depths.reshape(b * r, d)
        w = weights.reshape(b * r, 1, -1).float()
        w = F.avg_pool1d(F.max_pool1d(w, 2, 1, padding=1), 2, 1).reshape(b * r, -1) + 0.01
        bins = 0.5 * (z[:, :-1] + z[:, 1:])
        pdf_w = w[:, 1:-1] + eps
        nbins = pdf_w.shape[1]
        pdf = pdf_w / pdf_w.sum(-1, keepdim=True)
        cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1).contiguous()
        if deterministic:
            u = torch.linspace(0, 1, num, device=z.device).expand(b * r, num).contiguous()
        else:
            u = torch.rand(b * r, num, device=z.device, generator=generator)
        idx = torch.searchsorted(cdf, u, right=True)
        below = torch.clamp_min(idx - 1, 0)
        above = torch.clamp_max(idx, nbins)
        cdf_lo, cdf_hi = torch.gather(cdf, 1, below), torch.gather(cdf, 1, above)
        bin_lo, bin_hi = torch.gather(bins, 1, below), torch.gather(bins, 1, above)
        denom = cdf_hi - cdf_lo
        denom = torch.where(denom < eps, torch.ones_like(denom), denom)
        fine = bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)
        return fine.reshape(b, r, num)


# --- compositing --------------------------------------------------------------------------------


def interval_weights(sigma: torch.Tensor, depths: torch.Tensor, clamp_mode: str = "softplus") -> torch.Tensor:
    """Volume-rendering weights ``(..., S-1)`` of the intervals between sorted samples ``(..., S)``.

    Midpoint rule of ``MipRayMarcher2``: density ``softplus(mean raw sigma - 1)`` per interval,
    ``alpha = 1 - exp(-density * delta)``, transmittance ``prod (1 - alpha + 1e-10)``.
    """
    deltas = depths[..., 1:] - depths[..., :-1]
    s_mid = (sigma[..., :-1] + sigma[..., 1:]) / 2
    if clamp_mode != "softplus":
        raise ValueError(f"unsupported clamp_mode {clamp_mode!r} (EG3D uses 'softplus')")
    density = F.softplus(s_mid - 1)
    alpha = 1 - torch.exp(-density * deltas)
    shifted = torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha + 1e-10], -1)
    return alpha * torch.cumprod(shifted, -1)[..., :-1]


def sample_coefficients(w: torch.Tensor) -> torch.Tensor:
    """Per-sample colour coefficients ``(..., S)`` from interval weights ``(..., S-1)``.

    ``sum_k w_k (c_k + c_{k+1}) / 2 == sum_j c_j (w_{j-1} + w_j) / 2``, so colours can be
    reduced sample by sample without forming interval midpoints.
    """
    z = torch.zeros_like(w[..., :1])
    return (torch.cat([w, z], -1) + torch.cat([z, w], -1)) / 2


def composite_depth(w: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Expected depth ``(...)`` per ray: ``sum w t_mid / sum w``, NaN -> +inf (clamped later)."""
    t_mid = (depths[..., :-1] + depths[..., 1:]) / 2
    d = (w * t_mid).sum(-1) / w.sum(-1)
    return torch.nan_to_num(d, nan=float("inf"))


@dataclass
class RenderSettings:
    """What one rendering call needs (resolved from the checkpoint's rendering kwargs)."""

    depth_resolution: int
    depth_resolution_importance: int
    ray_start: float | str
    ray_end: float | str
    box_warp: float
    disparity_space_sampling: bool = False
    clamp_mode: str = "softplus"
    white_back: bool = False
    density_noise: float = 0.0
    deterministic: bool = False
