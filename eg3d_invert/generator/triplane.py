"""EG3D's tri-plane generator: StyleGAN2 backbone -> tri-planes -> volume rendering -> super-resolution.

``TriPlaneGenerator(**init_kwargs)`` takes the ``init_kwargs`` stored in the official
checkpoints and exposes the official methods (``mapping``, ``synthesis``, ``forward``,
``sample``, ``sample_mixed``) with the official semantics, so EG3D scripts port directly.
Two additions make repeated rendering cheap without hidden state: :meth:`planes` computes the
tri-planes once, and :meth:`render` / :meth:`sample_planes` use them for any number of cameras
or points.

The network is here; the ray marcher is :func:`.rendering.march`, the plane lookup
:mod:`.planes`, and the hand-written autograd kernels :mod:`.kernels`.

Deliberate differences from the official class:

* ``synthesis(..., neural_rendering_resolution=r)`` does not overwrite the stored default;
* there is no ``_last_planes`` cache (pass planes explicitly instead);
* ``deterministic=True`` selects the reference rendering mode (no jitter of the coarse depths,
  evenly spaced importance samples) and ``sample_mult`` multiplies both depth sample counts;
* renders also return ``image_opacity``, the accumulated alpha the official renderer computes
  and drops.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from . import rendering
from .kernels import DecoderMLP
from .planes import plane_table, sample_triplane_features
from .stylegan2 import FullyConnectedLayer, StyleGAN2Backbone
from .superresolution import superresolution_class

PLANE_CHANNELS = 32
PLANE_RESOLUTION = 256


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
        sigma, rgb = DecoderMLP.apply(features, w1, b1, w2, b2)  # no graph is built without gradients
        return sigma, widen_sigmoid(rgb) if widen else rgb

    def forward(self, sampled_features: torch.Tensor, ray_directions: torch.Tensor | None = None) -> dict:
        """Official interface: ``(N, n_planes, M, C)`` -> ``{'rgb': (N, M, 32), 'sigma': (N, M, 1)}``."""
        n, _, m, c = sampled_features.shape
        sigma, rgb = self.decode(sampled_features.mean(1).reshape(n * m, c))
        return {"rgb": rgb.reshape(n, m, -1), "sigma": sigma.reshape(n, m, 1)}


def widen_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """MipNeRF's widened sigmoid range, ``x * 1.002 - 0.001`` (the official decoder's colours)."""
    return x * (1 + 2 * rendering.WIDEN) - rendering.WIDEN


def _check_config(rendering_kwargs: Mapping[str, Any]) -> None:
    rendering.RenderSettings.from_kwargs(rendering_kwargs)
    if not isinstance(rendering_kwargs.get("superresolution_module"), str):
        raise ConfigError("rendering_kwargs lacks superresolution_module (the official class path)")


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
        _check_config(rendering_kwargs)
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
        #: The file the weights were read from and its format (``'official-pickle'``, ``'torch'``,
        #: ``'safetensors'``), set by :func:`~eg3d_invert.pretrained.load_generator`; None for a
        #: generator built in memory or changed since (a tuned copy), which then is no file's.
        self.checkpoint_path: str | None = None
        self.checkpoint_format: str | None = None

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
            ``image_depth (B, 1, r, r)`` (distance along the ray), ``image_opacity (B, 1, r, r)``
            (accumulated alpha in [0, 1]) and ``feature_image (B, 32, r, r)``.
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
        feats, depth, opacity = rendering.march(self._query(planes), origins, dirs, self.render_settings(),
                                                sample_mult=sample_mult, deterministic=deterministic,
                                                generator=generator, max_points_per_chunk=max_points_per_chunk)
        feature_image = feats.reshape(bsz, feats.shape[1], res, res)
        depth_image = depth.reshape(bsz, 1, res, res)
        rgb_image = feature_image[:, :3]
        out = {"image_raw": rgb_image, "image_depth": depth_image, "feature_image": feature_image,
               "image_opacity": opacity.reshape(bsz, 1, res, res)}
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

    def render_settings(self) -> rendering.RenderSettings:
        """The checked :class:`~eg3d_invert.generator.rendering.RenderSettings` of :attr:`rendering_kwargs`."""
        return rendering.RenderSettings.from_kwargs(self.rendering_kwargs)

    def _density_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        noise = self.rendering_kwargs.get("density_noise", 0)
        return sigma + torch.randn_like(sigma) * noise if noise > 0 else sigma

    def _query(self, planes: torch.Tensor) -> rendering.Query:
        """The scene as the ray marcher sees it: raw density and un-widened colours at points."""
        box = self.rendering_kwargs["box_warp"]
        table = plane_table(planes)  # built once per render, shared by every chunk

        def query(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            b, p, _ = points.shape
            feats = sample_triplane_features(planes, points, box, table)
            sigma, rgb = self.decoder.decode(feats.reshape(b * p, -1), widen=False)
            return self._density_noise(sigma).reshape(b, p), rgb.reshape(b, p, -1)

        return query
