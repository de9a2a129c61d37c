"""EG3D's tri-plane generator: StyleGAN2 backbone -> tri-planes -> volume rendering -> super-resolution.

``TriPlaneGenerator(**init_kwargs)`` takes the ``init_kwargs`` stored in the official
checkpoints and exposes the official methods (``mapping``, ``synthesis``, ``forward``,
``sample``, ``sample_mixed``) with the official semantics, so EG3D scripts port directly.
Two additions make repeated rendering cheap without hidden state: :meth:`planes` computes the
tri-planes once, and :meth:`render` / :meth:`sample_planes` use them for any number of cameras
or points.

Deliberate differences from the official class:

* ``synthesis(..., neural_rendering_resolution=r)`` does not overwrite the stored default;
* there is no ``_last_planes`` cache (pass planes explicitly instead);
* ``deterministic=True`` selects the reference rendering mode (no jitter of the coarse depths,
  evenly spaced importance samples) and ``sample_mult`` multiplies both depth sample counts.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from . import rendering
from .stylegan2 import FullyConnectedLayer, StyleGAN2Backbone
from .superresolution import superresolution_class

PLANE_CHANNELS = 32
PLANE_RESOLUTION = 256

#: The released checkpoints' plane axes (``generate_planes()``): planes XY, XZ and ZX. The third
#: was meant to be YZ; the checkpoints were trained with this one, so it must stay (CONVENTIONS.md 3).
PLANE_AXES = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                           [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                           [[0, 0, 1], [1, 0, 0], [0, 1, 0]]], dtype=torch.float32)

#: Keys of ``rendering_kwargs`` that only matter for training; kept for round trips, unused here.
_TRAINING_ONLY_KEYS = ("gpc_reg_prob", "density_reg", "density_reg_p_dist", "reg_type", "image_resolution")


class OSGDecoder(nn.Module):
    """Tri-plane features -> raw density + 32 colour features (the view direction is ignored)."""

    def __init__(self, n_features: int, options: Mapping[str, Any]):
        super().__init__()
        self.hidden_dim = 64
        lr_mul = options["decoder_lr_mul"]
        self.net = nn.Sequential(
            FullyConnectedLayer(n_features, self.hidden_dim, lr_multiplier=lr_mul),
            nn.Softplus(),
            FullyConnectedLayer(self.hidden_dim, 1 + options["decoder_output_dim"], lr_multiplier=lr_mul),
        )

    def decode(self, features: torch.Tensor, need_rgb: bool = True,
               widen: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``features (P, C)`` -> raw sigma ``(P,)`` and rgb ``(P, 32)`` in ``[-0.001, 1.001]``.

        ``widen=False`` returns the plain sigmoid in [0, 1]: the renderer applies MipNeRF's
        affine widening after compositing (it commutes with the weighted sum), which saves two
        passes over every sample's 32 features.
        """
        fc0, fc2 = self.net[0], self.net[2]
        w1, b1 = fc0.effective_weight(features.dtype), fc0.effective_bias(features.dtype)
        w2, b2 = fc2.effective_weight(features.dtype), fc2.effective_bias(features.dtype)
        if not need_rgb:
            return torch.addmv(b2[0], F.softplus(torch.addmm(b1, features, w1.t())), w2[0]), None
        sigma, rgb = _DecoderMLP.apply(features, w1, b1, w2, b2)  # no graph is built without gradients
        return sigma, widen_sigmoid(rgb) if widen else rgb

    def forward(self, sampled_features: torch.Tensor, ray_directions: torch.Tensor | None = None) -> dict:
        """Official interface: ``(N, n_planes, M, C)`` -> ``{'rgb': (N, M, 32), 'sigma': (N, M, 1)}``."""
        n, _, m, c = sampled_features.shape
        sigma, rgb = self.decode(sampled_features.mean(1).reshape(n * m, c))
        return {"rgb": rgb.reshape(n, m, -1), "sigma": sigma.reshape(n, m, 1)}


class _DecoderMLP(torch.autograd.Function):
    """The decoder's two layers, ``softplus(f W1^T + b1) W2^T + b2`` -> (raw sigma, sigmoid colours).

    Same arithmetic as the plain path; the backward is written out so that it keeps only the
    hidden activations (the softplus derivative ``sigmoid(x)`` equals ``-expm1(-softplus(x))``),
    the colours, and the features when the first layer's weights need a gradient. It assembles
    the output gradient in one ``(P, 33)`` buffer rather than zero-filling it once per slice
    (density and colours).
    """

    @staticmethod
    def forward(ctx, features, w1, b1, w2, b2):
        h = F.softplus(torch.addmm(b1, features, w1.t()))
        out = torch.addmm(b2, h, w2.t())
        rgb = torch.sigmoid(out[:, 1:])
        sigma = out[:, 0].contiguous()
        # The features are only needed for the first layer's weight gradient.
        ctx.save_for_backward(features if ctx.needs_input_grad[1] else None, w1, w2, h, rgb)
        return sigma, rgb

    @staticmethod
    def backward(ctx, g_sigma, g_rgb):
        features, w1, w2, h, rgb = ctx.saved_tensors
        need = ctx.needs_input_grad
        g_out = h.new_empty(h.shape[0], w2.shape[0])
        if g_sigma is None:
            g_out[:, 0].zero_()
        else:
            g_out[:, 0].copy_(g_sigma)
        if g_rgb is None:
            g_out[:, 1:].zero_()
        else:
            torch.ops.aten.sigmoid_backward.grad_input(g_rgb, rgb, grad_input=g_out[:, 1:])
        g_f = g_w1 = g_b1 = g_w2 = g_b2 = None
        if need[3]:
            g_w2 = g_out.t().mm(h)
        if need[4]:
            g_b2 = g_out.sum(0)
        if need[0] or need[1] or need[2]:
            # softplus'(x) = sigmoid(x) = -expm1(-h): g_x holds the negated gradient, and the
            # sign goes onto the (smaller) results.
            g_x = g_out.mm(w2)
            # In row blocks through one small buffer: a fresh (P, 64) temporary costs more in page
            # faults than the arithmetic.
            step = 1 << 15
            buf = h.new_empty(min(step, h.shape[0]), h.shape[1])
            for s in range(0, h.shape[0], step):
                d = torch.neg(h[s:s + step], out=buf[:min(step, h.shape[0] - s)])
                g_x[s:s + step].mul_(d.expm1_())
            del buf
            if need[0]:
                g_f = g_x.mm(w1).neg_()
            if need[1]:
                g_w1 = g_x.t().mm(features).neg_()
            if need[2]:
                g_b1 = g_x.sum(0).neg_()
        return g_f, g_w1, g_b1, g_w2, g_b2


def widen_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """MipNeRF's widened sigmoid range, ``x * 1.002 - 0.001`` (the official decoder's colours)."""
    return x * (1 + 2 * 0.001) - 0.001


def plane_table(planes: torch.Tensor) -> torch.Tensor | None:
    """Planes ``(N, 3, C, H, W)`` as one row table ``(N*3*(H+3)*(W+3), C)`` with a zero border.

    One zero row/column before and two after each plane stand in for grid_sample's zero
    padding: every bilinear corner of any point then has a valid index, and corners outside
    the plane read zeros.
    """
    if planes.device.type != "cpu":
        return None  # GPUs use grid_sample directly
    n, k, c, h, w = planes.shape
    padded = F.pad(planes.reshape(n * k, c, h, w), [1, 2, 1, 2])
    return padded.permute(0, 2, 3, 1).reshape(-1, c)


def sample_triplane_features(planes: torch.Tensor, points: torch.Tensor, box_warp: float,
                             table: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the three planes' bilinear features at ``points``: ``(N, P, C)``.

    Args:
        planes: ``(N, 3, C, H, W)``; ``N == 1`` planes are shared by every batch entry of points.
        points: ``(B, P, 3)`` world coordinates, ``B == N`` or ``N == 1``.
        box_warp: side of the tri-plane cube ``[-box_warp/2, box_warp/2]^3``; outside it the
            features are zero, exactly like the official ``grid_sample(padding_mode='zeros',
            align_corners=False)`` lookup.
        table: ``plane_table(planes)`` when the caller queries the same planes repeatedly
            (building it copies the planes once).

    The lookup is one ``embedding_bag``: twelve weighted rows (4 bilinear corners x 3 planes) of a
    channels-last copy of the planes per point. This reads 32 contiguous floats per corner where
    grid_sample on ``(C, H, W)`` planes strides through memory once per channel, and its
    backward accumulates rows instead of scattering channel by channel. Bilinear weights are
    differentiable in the points, so gradients also reach the camera.
    """
    n, k, c, h, w = planes.shape
    b, p, _ = points.shape
    if k != 3 or n not in (1, b):
        raise ValueError(f"planes {tuple(planes.shape)} do not fit points {tuple(points.shape)}")
    if planes.device.type != "cpu":
        return _sample_with_grid_sample(planes, points, box_warp)
    if table is None:
        table = plane_table(planes)
    g = points.to(planes.dtype).reshape(b * p, 3) * (2 / box_warp)
    # Plane k reads coordinates (x, y), (x, z), (z, x) as (width, height): the released quirk.
    u = g.index_select(1, _U_AXES.to(g.device))
    v = g.index_select(1, _V_AXES.to(g.device))
    # grid_sample's un-normalisation, then clamping that keeps far-away points on the zero border.
    ix = (((u + 1) * w - 1) / 2).clamp(-1, w)
    iy = (((v + 1) * h - 1) / 2).clamp(-1, h)
    x0, y0 = torch.floor(ix), torch.floor(iy)
    fx, fy = ix - x0, iy - y0
    row = w + 3
    plane_rows = (h + 3) * row
    base = (y0 * row + x0).long() + (torch.arange(3, device=g.device) * plane_rows + row + 1)
    if n > 1:
        base = base + (torch.arange(b, device=g.device) * (3 * plane_rows)).repeat_interleave(p)[:, None]
    corners = torch.tensor([0, 1, row, row + 1], device=g.device)
    index = (base.unsqueeze(-1) + corners).reshape(b * p, 12)
    gx = 1 - fx
    gy = (1 - fy) / 3
    fy = fy / 3
    weight = torch.stack((gx * gy, fx * gy, gx * fy, fx * fy), -1).reshape(b * p, 12)
    if table.requires_grad and torch.is_grad_enabled() and not weight.requires_grad:
        # Gradients for the planes only (PTI: the sample points carry no gradient).
        return _BilinearLookup.apply(table, index, weight, row).reshape(b, p, c)
    return F.embedding_bag(index, table, per_sample_weights=weight, mode="sum").reshape(b, p, c)


class _BilinearLookup(torch.autograd.Function):
    """``embedding_bag`` of 4-corner bilinear stencils whose backward skips the sort of all indices.

    The generic backward sorts the ``12 * P`` row indices and accumulates 32-float rows one
    by one. Here every (point, plane) adds its four corner contributions at once: the rows of
    a table four times as wide (one 32-float slot per corner) are indexed by the stencil's first
    corner, so ``3 * P`` unsorted 128-float rows are accumulated with ``index_add_``, and the
    four slots are then shifted onto their corners (offsets 0, 1, ``row``, ``row + 1``).
    Only the table gets a gradient; callers use plain ``embedding_bag`` when the stencil
    weights need one.
    """

    CHUNK = 1 << 14  # points per accumulation: the 3 * CHUNK * 128-float temporary stays in cache

    @staticmethod
    def forward(ctx, table, index, weight, row):
        ctx.save_for_backward(index, weight)
        ctx.rows, ctx.row = table.shape[0], row
        return F.embedding_bag(index, table, per_sample_weights=weight, mode="sum")

    @staticmethod
    def backward(ctx, grad):
        index, weight = ctx.saved_tensors
        rows, row = ctx.rows, ctx.row
        n, c = grad.shape
        grad = grad.contiguous()
        first = index[:, 0::4].reshape(-1)  # each stencil's top-left corner, (P * 3,)
        slots = grad.new_zeros(rows, 4, c)
        chunk = min(_BilinearLookup.CHUNK, n)
        buf = grad.new_empty(chunk, 3, 4, c)
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            contrib = torch.mul(weight[s:s + m].reshape(m, 3, 4, 1), grad[s:s + m].reshape(m, 1, 1, c), out=buf[:m])
            slots.view(rows, 4 * c).index_add_(0, first[3 * s:3 * (s + m)], contrib.view(3 * m, 4 * c))
        out = slots[:, 0].clone()
        for k, off in ((1, 1), (2, row), (3, row + 1)):
            out[off:].add_(slots[:-off, k])
        return out, None, None, None


_U_AXES = torch.tensor([0, 0, 2])
_V_AXES = torch.tensor([1, 2, 0])


def _sample_with_grid_sample(planes: torch.Tensor, points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """The official lookup (one grid_sample per plane), used on GPUs where it is the fast path."""
    b = points.shape[0]
    if planes.shape[0] == 1 and b > 1:
        planes = planes.expand(b, -1, -1, -1, -1)
    coords = points.to(planes.dtype) * (2 / box_warp)
    out = None
    for k in range(3):
        grid = torch.stack((coords[..., int(_U_AXES[k])], coords[..., int(_V_AXES[k])]), -1).unsqueeze(1)
        f = F.grid_sample(planes[:, k], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, :, 0]
        out = f if out is None else out + f
    return (out / 3).transpose(1, 2)


def _translate_config(rendering_kwargs: Mapping[str, Any]) -> None:
    missing = [k for k in ("superresolution_module", "depth_resolution", "depth_resolution_importance",
                           "ray_start", "ray_end", "box_warp") if k not in rendering_kwargs]
    if missing:
        from ..errors import ConfigError
        raise ConfigError(f"rendering_kwargs lacks {', '.join(missing)}")


def _weighted_sum(coef: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """``sum_s coef[b, r, s] * colors[b, r, s, :]`` as one batched matrix product: ``(B, R, C)``."""
    b, r, s, c = colors.shape
    return _WeightedSum.apply(coef.reshape(b * r, s), colors.reshape(b * r, s, c)).reshape(b, r, c)


class _WeightedSum(torch.autograd.Function):
    """``out[n] = coef[n] @ colors[n]``; the colours' gradient (an outer product per ray) is one
    broadcast multiplication instead of a batched matrix product with an inner size of one,
    which CPUs run ray by ray."""

    @staticmethod
    def forward(ctx, coef, colors):
        ctx.save_for_backward(coef, colors)
        return torch.bmm(coef.unsqueeze(1), colors).squeeze(1)

    @staticmethod
    def backward(ctx, grad):
        coef, colors = ctx.saved_tensors
        g_coef = g_colors = None
        if ctx.needs_input_grad[0]:
            g_coef = torch.bmm(colors, grad.unsqueeze(-1)).squeeze(-1)
        if ctx.needs_input_grad[1]:
            g_colors = coef.unsqueeze(-1) * grad.unsqueeze(1)
        return g_coef, g_colors


class TriPlaneGenerator(nn.Module):
    """EG3D generator with the official constructor arguments and parameter names.

    Args:
        z_dim, c_dim, w_dim: latent, label (25) and intermediate latent sizes.
        img_resolution, img_channels: final image size (after super-resolution) and channels (3).
        sr_num_fp16_res: > 0 runs the super-resolution in float16 on CUDA (and clamps it at 256).
        mapping_kwargs: arguments of the mapping network (``num_layers``, ...).
        rendering_kwargs: the official rendering settings (depth samples, ray range, box, SR module, ...).
        sr_kwargs: arguments of the SR blocks (``fused_modconv_default``; channel settings are ignored).
        **synthesis_kwargs: backbone settings (``channel_base``, ``channel_max``, ``num_fp16_res``,
            ``conv_clamp``, ``fused_modconv_default``).
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 sr_num_fp16_res: int = 0, mapping_kwargs: Mapping | None = None,
                 rendering_kwargs: Mapping | None = None, sr_kwargs: Mapping | None = None, **synthesis_kwargs):
        super().__init__()
        rendering_kwargs = dict(rendering_kwargs or {})
        _translate_config(rendering_kwargs)
        self.init_kwargs = copy.deepcopy(dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
            sr_num_fp16_res=sr_num_fp16_res, mapping_kwargs=dict(mapping_kwargs or {}),
            rendering_kwargs=rendering_kwargs, sr_kwargs=dict(sr_kwargs or {}), **synthesis_kwargs))
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.backbone = StyleGAN2Backbone(z_dim, c_dim, w_dim, img_resolution=PLANE_RESOLUTION,
                                          img_channels=PLANE_CHANNELS * 3, mapping_kwargs=dict(mapping_kwargs or {}),
                                          **synthesis_kwargs)
        sr_cls = superresolution_class(rendering_kwargs["superresolution_module"])
        self.superresolution = sr_cls(channels=PLANE_CHANNELS, img_resolution=img_resolution,
                                      sr_num_fp16_res=sr_num_fp16_res,
                                      sr_antialias=rendering_kwargs.get("sr_antialias", True), **dict(sr_kwargs or {}))
        self.decoder = OSGDecoder(PLANE_CHANNELS, {"decoder_lr_mul": rendering_kwargs.get("decoder_lr_mul", 1),
                                                   "decoder_output_dim": PLANE_CHANNELS})
        self.neural_rendering_resolution = 64
        self.rendering_kwargs = rendering_kwargs
        #: True (default): with a 2X/4X super-resolution that gets no resize, ``image_raw`` is
        #: what the official code returns (the raw render plus the first SR block's RGB, an
        #: in-place side effect there). False: always the composited raw render.
        self.official_aliased_raw = True

    # --- construction helpers ------------------------------------------------------------------

    @property
    def num_ws(self) -> int:
        return self.backbone.num_ws

    @property
    def device(self) -> torch.device:
        return self.backbone.synthesis.b4.const.device

    def extra_repr(self) -> str:
        rk = self.rendering_kwargs
        return (f"img_resolution={self.img_resolution}, neural_rendering_resolution={self.neural_rendering_resolution}, "
                f"sr={rk['superresolution_module'].rsplit('.', 1)[-1]}, "
                f"depth={rk['depth_resolution']}+{rk['depth_resolution_importance']}")

    # --- latent side ---------------------------------------------------------------------------

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        """``z (N, z_dim)``, label ``c (N, 25)`` -> ``ws (N, num_ws, w_dim)``.

        The label is zeroed if the checkpoint says ``c_gen_conditioning_zero`` and scaled by
        ``c_scale`` (the official default when absent is 0). Truncation ``psi`` pulls the first
        ``truncation_cutoff`` ws (all if None) toward the tracked average ``w_avg``.
        """
        c = c[:, :25]
        if self.rendering_kwargs.get("c_gen_conditioning_zero", False):
            c = torch.zeros_like(c)
        return self.backbone.mapping(z, c * self.rendering_kwargs.get("c_scale", 0), truncation_psi=truncation_psi,
                                     truncation_cutoff=truncation_cutoff, update_emas=update_emas)

    @property
    def w_avg(self) -> torch.Tensor:
        """Tracked average intermediate latent ``(w_dim,)``."""
        return self.backbone.mapping.w_avg

    def planes(self, ws: torch.Tensor, noise_mode: str = "const", force_fp32: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Tri-planes ``(N, 3, 32, 256, 256)`` float32 from ``ws (N, num_ws, w_dim)``.

        ``noise_mode``: 'const' (the stored noise, deterministic), 'random' or 'none'.
        """
        p = self.backbone.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32, generator=generator)
        return p.view(len(p), 3, PLANE_CHANNELS, p.shape[-2], p.shape[-1])

    # --- rendering -----------------------------------------------------------------------------

    def render(self, planes: torch.Tensor, c: torch.Tensor, ws: torch.Tensor, *,
               neural_rendering_resolution: int | None = None, deterministic: bool = False, sample_mult: float = 1,
               force_fp32: bool = False, generator: torch.Generator | None = None,
               max_points_per_chunk: int = 1 << 22, run_superresolution: bool = True) -> dict[str, torch.Tensor]:
        """Render precomputed tri-planes from cameras.

        Args:
            planes: ``(N, 3, 32, 256, 256)`` or ``(1, ...)`` shared by every camera.
            c: labels ``(B, 25)``; ``B`` must equal ``N`` unless ``N == 1``.
            ws: ``(N or 1, num_ws, w_dim)``; the super-resolution uses the last w.
            neural_rendering_resolution: raw render size (default: the checkpoint's).
            deterministic: the reference sampling mode (no random depth jitter).
            sample_mult: multiplies both depth sample counts (gen_videos' ``--sample_mult``).
            max_points_per_chunk: rays are rendered in chunks of at most this many samples
                (bounds the memory of huge renders; results do not depend on it).
            run_superresolution: False skips the super-resolution (no ``image`` key): raw
                renders and depth cost a fraction of the full image.
        Returns:
            ``image (B, 3, R, R)`` roughly in [-1, 1], ``image_raw (B, 3, r, r)``,
            ``image_depth (B, 1, r, r)`` (distance along the ray) and ``feature_image (B, 32, r, r)``.
        """
        if c.ndim != 2 or c.shape[1] < 25:
            raise ValueError(f"c must be (B, 25) camera labels, got {tuple(c.shape)}")
        bsz = c.shape[0]
        if planes.shape[0] not in (1, bsz) or ws.shape[0] not in (1, bsz):
            raise ValueError(f"planes ({planes.shape[0]}) and ws ({ws.shape[0]}) must have batch 1 or {bsz}")
        res = int(neural_rendering_resolution or self.neural_rendering_resolution)
        cam2world = c[:, :16].reshape(-1, 4, 4)
        intrinsics = c[:, 16:25].reshape(-1, 3, 3)
        origins, dirs = rendering.generate_rays(cam2world, intrinsics, res)
        feats, depth = self._render_rays(planes, origins, dirs, deterministic=deterministic, sample_mult=sample_mult,
                                         generator=generator, max_points_per_chunk=max_points_per_chunk)
        feature_image = feats.reshape(bsz, feats.shape[1], res, res)
        depth_image = depth.reshape(bsz, 1, res, res)
        rgb_image = feature_image[:, :3]
        out = {"image_raw": rgb_image, "image_depth": depth_image, "feature_image": feature_image}
        if not run_superresolution:
            return out
        sr_noise = self.rendering_kwargs.get("superresolution_noise_mode", "none")
        ws_sr = ws.expand(bsz, -1, -1) if ws.shape[0] == 1 and bsz > 1 else ws
        out["image"], aliased_raw = self.superresolution(rgb_image, feature_image, ws_sr, noise_mode=sr_noise,
                                                         force_fp32=force_fp32, generator=generator,
                                                         return_aliased_raw=True)
        if aliased_raw is not None and self.official_aliased_raw:
            # Reproduce the official outputs of 2X/4X without resize (see the SR module's note).
            out["image_raw"] = aliased_raw
            out["feature_image"] = torch.cat([aliased_raw, feature_image[:, 3:]], 1)
        return out

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, neural_rendering_resolution: int | None = None,
                  noise_mode: str = "const", deterministic: bool = False, sample_mult: float = 1,
                  force_fp32: bool = False, generator: torch.Generator | None = None,
                  update_emas: bool = False, run_superresolution: bool = True) -> dict[str, torch.Tensor]:
        """Official ``synthesis``: ``ws (N, num_ws, w_dim)`` and cameras ``c (N, 25)`` -> renders.

        Returns the dict of :meth:`render`. The backbone noise follows ``noise_mode``; the
        super-resolution noise follows the checkpoint's ``superresolution_noise_mode``.
        """
        del update_emas  # accepted for script compatibility; there is nothing to update at inference
        planes = self.planes(ws, noise_mode=noise_mode, force_fp32=force_fp32, generator=generator)
        return self.render(planes, c, ws, neural_rendering_resolution=neural_rendering_resolution,
                           deterministic=deterministic, sample_mult=sample_mult, force_fp32=force_fp32,
                           generator=generator, run_superresolution=run_superresolution)

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1, truncation_cutoff: int | None = None,
                **synthesis_kwargs) -> dict[str, torch.Tensor]:
        """Official ``forward``: mapping then synthesis, rendering from the conditioning camera ``c``."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, c, **synthesis_kwargs)

    # --- point queries -------------------------------------------------------------------------

    def sample_planes(self, planes: torch.Tensor, coordinates: torch.Tensor, need_rgb: bool = True,
                      max_points_per_chunk: int = 1 << 21, table: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Raw density and colour features at points from precomputed planes.

        Args:
            planes: ``(N, 3, 32, H, W)``.
            coordinates: ``(N, M, 3)`` world points (the decoder ignores view directions).
            need_rgb: False skips the colour head (density-only queries for meshing).
            table: :func:`plane_table` of ``planes``, for callers that query the same planes
                many times (it is otherwise rebuilt per call).
        Returns:
            ``sigma (N, M, 1)`` raw (before softplus) and, if requested, ``rgb (N, M, 32)``.
        """
        if coordinates.ndim != 3 or coordinates.shape[-1] != 3:
            raise ValueError(f"coordinates must be (N, M, 3), got {tuple(coordinates.shape)}")
        box = self.rendering_kwargs["box_warp"]
        if table is None:
            table = plane_table(planes)
        sig, cols = [], []
        for start in range(0, coordinates.shape[1], max_points_per_chunk):
            pts = coordinates[:, start:start + max_points_per_chunk]
            feats = sample_triplane_features(planes, pts, box, table)
            s, rgb = self.decoder.decode(feats.reshape(-1, feats.shape[-1]), need_rgb)
            sig.append(self._density_noise(s).reshape(pts.shape[0], -1))
            if need_rgb:
                cols.append(rgb.reshape(pts.shape[0], pts.shape[1], -1))
        out = {"sigma": torch.cat(sig, 1)[..., None]}
        if need_rgb:
            out["rgb"] = torch.cat(cols, 1)
        return out

    def sample_mixed(self, coordinates: torch.Tensor, directions: torch.Tensor | None, ws: torch.Tensor,
                     truncation_psi: float = 1, truncation_cutoff: int | None = None, noise_mode: str = "const",
                     update_emas: bool = False) -> dict[str, torch.Tensor]:
        """Official ``sample_mixed``: densities and features at points for given ``ws``."""
        del directions, truncation_psi, truncation_cutoff, update_emas  # unused, as officially
        return self.sample_planes(self.planes(ws, noise_mode=noise_mode), coordinates)

    def sample(self, coordinates: torch.Tensor, directions: torch.Tensor | None, z: torch.Tensor, c: torch.Tensor,
               truncation_psi: float = 1, truncation_cutoff: int | None = None, noise_mode: str = "const",
               update_emas: bool = False) -> dict[str, torch.Tensor]:
        """Official ``sample``: mapping of ``(z, c)`` then :meth:`sample_mixed`."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.sample_mixed(coordinates, directions, ws, noise_mode=noise_mode)

    # --- internals -----------------------------------------------------------------------------

    def _density_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        noise = self.rendering_kwargs.get("density_noise", 0)
        return sigma + torch.randn_like(sigma) * noise if noise > 0 else sigma

    def _render_rays(self, planes, origins, dirs, *, deterministic, sample_mult, generator, max_points_per_chunk):
        rk = self.rendering_kwargs
        n_coarse = int(rk["depth_resolution"] * sample_mult)
        n_fine = int(rk["depth_resolution_importance"] * sample_mult)
        bsz, n_rays = origins.shape[:2]
        per_ray = n_coarse + n_fine
        chunk = max(1, max_points_per_chunk // max(per_ray, 1) // max(bsz, 1))
        feats, depths, lo, hi = [], [], [], []
        table = plane_table(planes)
        for s in range(0, n_rays, chunk):
            f, d, dmin, dmax = self._render_chunk(planes, table, origins[:, s:s + chunk], dirs[:, s:s + chunk],
                                                  n_coarse, n_fine, deterministic, generator)
            feats.append(f)
            depths.append(d)
            lo.append(dmin)
            hi.append(dmax)
        feats = torch.cat(feats, 2) if len(feats) > 1 else feats[0]
        depth = torch.cat(depths, 1) if len(depths) > 1 else depths[0]
        # The official renderer clamps to the min/max sample depth of the whole call.
        depth = torch.clamp(depth, torch.stack(lo).min(), torch.stack(hi).max())
        return feats, depth

    def _render_chunk(self, planes, table, origins, dirs, n_coarse, n_fine, deterministic, generator):
        rk = self.rendering_kwargs
        bsz, n_rays, _ = origins.shape
        box = rk["box_warp"]
        clamp_mode = rk.get("clamp_mode", "softplus")

        def query(depths):
            pts = (origins.unsqueeze(-2) + depths.unsqueeze(-1) * dirs.unsqueeze(-2)).reshape(bsz, -1, 3)
            feats = sample_triplane_features(planes, pts, box, table)
            sigma, rgb = self.decoder.decode(feats.reshape(-1, feats.shape[-1]), widen=False)
            sigma = self._density_noise(sigma)
            return sigma.reshape(bsz, n_rays, -1), rgb.reshape(bsz, n_rays, depths.shape[-1], -1)

        d_coarse = rendering.stratified_depths(origins, dirs, rk["ray_start"], rk["ray_end"], n_coarse, box_warp=box,
                                               disparity_space=rk.get("disparity_space_sampling", False),
                                               deterministic=deterministic, generator=generator)
        s_coarse, c_coarse = query(d_coarse)
        if n_fine > 0:
            w_coarse = rendering.interval_weights(s_coarse.detach(), d_coarse, clamp_mode)
            d_fine = rendering.importance_depths(d_coarse, w_coarse, n_fine, deterministic=deterministic,
                                                 generator=generator)
            s_fine, c_fine = query(d_fine)
            d_all = torch.cat([d_coarse, d_fine], -1)
            s_all = torch.cat([s_coarse, s_fine], -1)
            d_sorted, order = torch.sort(d_all, dim=-1)
            s_sorted = torch.gather(s_all, -1, order)
        else:
            d_sorted, s_sorted, order = d_coarse, s_coarse, None
        w = rendering.interval_weights(s_sorted, d_sorted, clamp_mode)
        coef_sorted = rendering.sample_coefficients(w)
        depth = rendering.composite_depth(w, d_sorted)
        if order is not None:
            # Back to the unsorted sample order, so the colours are used where they lie.
            coef = torch.zeros_like(coef_sorted).scatter(-1, order, coef_sorted)
            feats = _weighted_sum(coef[..., :n_coarse], c_coarse) + _weighted_sum(coef[..., n_coarse:], c_fine)
        else:
            feats = _weighted_sum(coef_sorted, c_coarse)
        opacity = w.sum(-1, keepdim=True)
        feats = feats * (1 + 2 * 0.001) - 0.001 * opacity  # widened sigmoid, applied after the sum
        if rk.get("white_back", False):
            feats = feats + 1 - opacity
        feats = (feats * 2 - 1).transpose(1, 2)  # (B, 32, rays): channels first for the image
        return feats, depth, d_sorted.min(), d_sorted.max()
