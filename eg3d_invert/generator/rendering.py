"""Volume rendering of tri-planes: rays, depth sampling, compositing, and the ray marcher.

Pure functions over batched tensors, on the inputs' device and dtype. They reproduce the
official ``RaySampler``, ``ImportanceRenderer`` and ``MipRayMarcher2``: coarse samples evenly
spaced (plus jitter) between ``ray_start`` and ``ray_end``, importance samples drawn from the
coarse weights, both composited together with the midpoint rule. :func:`march` is the one
implementation of that loop: images, depth maps and opacity all come from it. It is organised
for speed and memory:

* compositing never materialises the per-interval colours ``(c_k + c_{k+1}) / 2``: the weights
  are folded onto the samples and the colours are reduced in their original (unsorted) order,
  so the 32-channel features are neither gathered nor sorted;
* the decoder's widened sigmoid (an affine map) is applied once per ray after compositing.

Conventions: rays are ordered row-major (index ``i * R + j`` for image row ``i``, column ``j``);
depths are distances along *unit* ray directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .kernels import weighted_sum


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


# --- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderSettings:
    """The rendering settings of a checkpoint (its ``rendering_kwargs``), checked once.

    Attributes:
        depth_resolution, depth_resolution_importance: coarse and importance samples per ray.
        ray_start, ray_end: the sampled depth range along each unit ray, or both ``'auto'``
            (the ray's intersection with the tri-plane box, as the ShapeNet model uses).
        box_warp: side of the tri-plane cube in world units.
        disparity_space_sampling: space the coarse samples evenly in 1/depth.
        clamp_mode: density activation; only ``'softplus'`` exists in EG3D.
        white_back: composite over white instead of black.
        density_noise: std of Gaussian noise added to the raw densities (0 in the releases).
    """

    depth_resolution: int
    depth_resolution_importance: int
    ray_start: float | str
    ray_end: float | str
    box_warp: float
    disparity_space_sampling: bool = False
    clamp_mode: str = "softplus"
    white_back: bool = False
    density_noise: float = 0.0

    @classmethod
    def from_kwargs(cls, rendering_kwargs: Mapping[str, Any]) -> "RenderSettings":
        """Read the official ``rendering_kwargs``; a missing or mistyped entry is a ConfigError
        naming it (a checkpoint is untrusted input, so its values are checked, not assumed)."""
        if not isinstance(rendering_kwargs, Mapping):
            raise ConfigError(f"rendering_kwargs must be a dict, got {type(rendering_kwargs).__name__}")
        rk = rendering_kwargs
        missing = [k for k in ("depth_resolution", "depth_resolution_importance", "ray_start", "ray_end",
                               "box_warp") if k not in rk]
        if missing:
            raise ConfigError(f"rendering_kwargs lacks {', '.join(missing)}")

        def count(key: str, minimum: int) -> int:
            v = rk[key]
            if not _is_int(v) or v < minimum:
                raise ConfigError(f"rendering_kwargs[{key!r}] must be an integer >= {minimum}, got {v!r}")
            return int(v)

        def number(key: str, default=None, positive: bool = False, minimum: float | None = None) -> float:
            v = rk.get(key, default)
            ok = _is_number(v) and math.isfinite(v) and (not positive or v > 0) and (minimum is None or v >= minimum)
            if not ok:
                want = ("a positive number" if positive else f"a number >= {minimum}" if minimum is not None
                        else "a number")
                raise ConfigError(f"rendering_kwargs[{key!r}] must be {want}, got {v!r}")
            return float(v)

        def flag(key: str) -> bool:
            v = rk.get(key, False)
            if not isinstance(v, bool):
                raise ConfigError(f"rendering_kwargs[{key!r}] must be true or false, got {v!r}")
            return v

        auto = [rk["ray_start"] == "auto", rk["ray_end"] == "auto"]
        if any(auto):
            if not all(auto):
                raise ConfigError("rendering_kwargs: ray_start and ray_end must both be 'auto' or both numbers")
            start, end = "auto", "auto"
        else:
            start, end = number("ray_start", minimum=0.0), number("ray_end", minimum=0.0)
            if not end > start:
                raise ConfigError(f"rendering_kwargs: ray_end ({end}) must exceed ray_start ({start})")
        clamp_mode = rk.get("clamp_mode", "softplus")
        if clamp_mode != "softplus":
            raise ConfigError(f"rendering_kwargs['clamp_mode'] must be 'softplus' (EG3D's only mode), "
                              f"got {clamp_mode!r}")
        return cls(depth_resolution=count("depth_resolution", 2),
                   depth_resolution_importance=count("depth_resolution_importance", 0),
                   ray_start=start, ray_end=end, box_warp=number("box_warp", positive=True),
                   disparity_space_sampling=flag("disparity_space_sampling"), clamp_mode=clamp_mode,
                   white_back=flag("white_back"), density_noise=number("density_noise", 0, minimum=0.0))

    def sample_counts(self, sample_mult: float = 1) -> tuple[int, int]:
        """Coarse and importance samples per ray with ``sample_mult`` (gen_videos' ``--sample_mult``)."""
        return int(self.depth_resolution * sample_mult), int(self.depth_resolution_importance * sample_mult)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --- the ray marcher ------------------------------------------------------------------------------

#: ``query(points (B, P, 3)) -> (raw sigma (B, P), colours (B, P, C))``: the density before its
#: activation (any density noise included) and the decoder's sigmoid colours *before* MipNeRF's
#: widening ``x * 1.002 - 0.001``, which :func:`march` applies after compositing.
Query = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

#: The widened sigmoid's margin (the official decoder maps colours to ``[-0.001, 1.001]``).
WIDEN = 0.001


def march(query: Query, origins: torch.Tensor, dirs: torch.Tensor, settings: RenderSettings, *,
          sample_mult: float = 1, deterministic: bool = False, generator: torch.Generator | None = None,
          max_points_per_chunk: int = 1 << 22) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render rays: coarse samples, importance samples, compositing (the official renderer).

    Args:
        query: the scene (see :data:`Query`).
        origins, dirs: ``(B, R, 3)`` ray origins and unit directions (:func:`generate_rays`).
        settings: the checkpoint's :class:`RenderSettings`.
        sample_mult: multiplies both sample counts.
        deterministic: no jitter of the coarse depths, evenly spaced importance samples.
        max_points_per_chunk: rays are marched in chunks of at most this many samples (bounds
            the memory of huge renders; results do not depend on it).
    Returns:
        ``features (B, C, R)`` composited colours/features in about [-1, 1] (``* 2 - 1`` as
        officially), ``depth (B, R)`` the expected distance along the ray (clamped, as
        officially, to the sample depths of the whole call) and ``opacity (B, R)`` in [0, 1],
        the accumulated alpha (1: the ray was stopped; the depth of a ray with little opacity
        means little).
    """
    n_coarse, n_fine = settings.sample_counts(sample_mult)
    bsz, n_rays = origins.shape[:2]
    chunk = max(1, max_points_per_chunk // max(n_coarse + n_fine, 1) // max(bsz, 1))
    feats, depths, alphas, lo, hi = [], [], [], [], []
    for s in range(0, n_rays, chunk):
        f, d, a, t = _march_chunk(query, origins[:, s:s + chunk], dirs[:, s:s + chunk], settings, n_coarse, n_fine,
                                  deterministic, generator)
        feats.append(f)
        depths.append(d)
        alphas.append(a)
        lo.append(t.min())
        hi.append(t.max())
    feats = torch.cat(feats, 2) if len(feats) > 1 else feats[0]
    depth = torch.cat(depths, 1) if len(depths) > 1 else depths[0]
    opacity = torch.cat(alphas, 1) if len(alphas) > 1 else alphas[0]
    # The official renderer clamps to the min/max sample depth of the whole call.
    depth = torch.clamp(depth, torch.stack(lo).min(), torch.stack(hi).max())
    return feats, depth, opacity.clamp(0, 1)


def _march_chunk(query: Query, origins, dirs, settings: RenderSettings, n_coarse: int, n_fine: int,
                 deterministic: bool, generator):
    bsz, n_rays, _ = origins.shape

    def samples(depths):
        pts = (origins.unsqueeze(-2) + depths.unsqueeze(-1) * dirs.unsqueeze(-2)).reshape(bsz, -1, 3)
        sigma, rgb = query(pts)
        return sigma.reshape(bsz, n_rays, -1), rgb.reshape(bsz, n_rays, depths.shape[-1], -1)

    d_coarse = stratified_depths(origins, dirs, settings.ray_start, settings.ray_end, n_coarse,
                                 box_warp=settings.box_warp, disparity_space=settings.disparity_space_sampling,
                                 deterministic=deterministic, generator=generator)
    s_coarse, c_coarse = samples(d_coarse)
    if n_fine > 0:
        w_coarse = interval_weights(s_coarse.detach(), d_coarse, settings.clamp_mode)
        d_fine = importance_depths(d_coarse, w_coarse, n_fine, deterministic=deterministic, generator=generator)
        s_fine, c_fine = samples(d_fine)
        d_sorted, order = torch.sort(torch.cat([d_coarse, d_fine], -1), dim=-1)
        s_sorted = torch.gather(torch.cat([s_coarse, s_fine], -1), -1, order)
    else:
        d_sorted, s_sorted, order = d_coarse, s_coarse, None
    w = interval_weights(s_sorted, d_sorted, settings.clamp_mode)
    coef_sorted = sample_coefficients(w)
    depth = composite_depth(w, d_sorted)
    if order is not None:
        # Back to the unsorted sample order, so the colours are used where they lie.
        coef = torch.zeros_like(coef_sorted).scatter(-1, order, coef_sorted)
        feats = weighted_sum(coef[..., :n_coarse], c_coarse) + weighted_sum(coef[..., n_coarse:], c_fine)
    else:
        feats = weighted_sum(coef_sorted, c_coarse)
    opacity = w.sum(-1)
    alpha = opacity.unsqueeze(-1)
    feats = feats * (1 + 2 * WIDEN) - WIDEN * alpha  # widened sigmoid, applied after the sum
    if settings.white_back:
        feats = feats + 1 - alpha
    feats = (feats * 2 - 1).transpose(1, 2)  # (B, C, rays): channels first for the image
    return feats, depth, opacity, d_sorted
