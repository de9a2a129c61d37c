"""Projection of a photo into EG3D's latent space (W or W+), as EG3D-projector does it.

The algorithm is NVIDIA's StyleGAN2-ADA projector adapted to EG3D by oneThousand1000/
EG3D-projector (``eg3d/projector/w_projector.py`` and ``w_plus_projector.py``), re-implemented
here from its description:

1. ``w_avg`` and ``w_std`` come from mapping ``w_avg_samples`` latents with the *frontal*
   conditioning camera (EG3D's mapping is camera-conditioned; the photo's camera is used only to
   render). ``w_std = sqrt(sum |w - w_avg|^2 / N)``, one number.
2. Start at ``w_avg`` (one w for ``'w'``, repeated per layer for ``'w+'``); the backbone's
   constant noise maps restart as fresh unit Gaussians.
3. Each step renders ``ws = w + n`` (``n ~ N(0, (w_std * 0.05 * max(0, 1 - t/0.75)^2)^2)``) from the
   photo's camera with depth samples x2, and minimises VGG-LPIPS on 256x256 area-downsampled
   images plus ``1e5 *`` the noise maps' autocorrelation; Adam's lr follows a 5 % linear
   warm-up and a 25 % cosine ramp-down to zero from the peak 0.01. The noise maps are
   re-normalised to zero mean and unit variance after every step.

Not in the official projector (off in its preset): the first ``coarse_steps`` steps compare the
raw neural render at a lower resolution, without super-resolution, with the photo downsampled
to it (:class:`ProjectionSettings`); the schedules of lr and latent noise run over all steps.

The result is a :class:`~eg3d_invert.inversion.results.Pivot`. The optimised noise maps are kept
in it (the official code throws them away; :class:`TuningSettings.use_pivot_noise` decides
whether tuning starts from them).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..camera import camera_sphere
from ..errors import InterruptedRun
from ._common import (ProgressCallback, as_label, check_finite, frontal_label, learning_rate_at, log_step,
                      noise_buffer_names, prepare_image, seeded_generator, set_buffer)
from .camera_refine import CameraCorrection
from .losses import PerceptualDistance, load_lpips, noise_regularization
from .results import Pivot
from ..generator.planes import release_scratch
from .settings import ProjectionSettings, coarse_resolution


def latent_noise_scale(step: int, num_steps: int, w_std: float, factor: float, ramp: float) -> float:
    """Std of the exploration noise added to w: ``w_std * factor * max(0, 1 - t / ramp)^2``."""
    t = step / num_steps
    return w_std * factor * max(0.0, 1.0 - t / ramp) ** 2


@torch.no_grad()
def w_statistics(G, num_samples: int = 600, seed: int = 123, label: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, float]:
    """Mean ``(1, 1, w_dim)`` and spread (one float) of mapped latents.

    ``z`` comes from ``numpy.random.RandomState(seed)`` as in the official projector and the
    mapping is conditioned on ``label`` (default: the frontal camera), truncation off.
    """
    label = frontal_label(G) if label is None else label.to(G.device)
    z = torch.from_numpy(np.random.RandomState(seed).randn(num_samples, G.z_dim).astype(np.float32)).to(G.device)
    w = G.mapping(z, label.expand(num_samples, -1))[:, :1]
    w_avg = w.mean(0, keepdim=True)
    w_std = float(((w - w_avg) ** 2).sum().div(num_samples).sqrt())
    return w_avg, w_std


@torch.no_grad()
def _search_start(G, w_avg, settings, label, cond, distance, gen) -> torch.Tensor:
    """Among ``w_avg`` and ``init_candidates`` truncated samples, the w whose render is closest
    (in the projection's LPIPS) to the photo; ``(1, 1, w_dim)``."""
    z = torch.randn(settings.init_candidates, G.z_dim, generator=gen, device=G.device)
    cands = G.mapping(z, cond.expand(len(z), -1), truncation_psi=settings.init_truncation)[:, :1]
    cands = torch.cat([w_avg, cands], 0)
    scores = []
    for w in cands:
        ws = w[None].expand(1, G.num_ws, -1)
        img = G.synthesis(ws, label, noise_mode="const", sample_mult=settings.sample_mult, deterministic=True)["image"]
        scores.append(float(distance(img).sum()))
    return cands[int(np.argmin(scores))][None].clone()


def project(G, image, camera, space: str | None = None, *, settings: ProjectionSettings | None = None,
            preset: str = "official", lpips_model=None, callback: ProgressCallback | None = None) -> Pivot:
    """Find the latent whose render from ``camera`` looks like ``image``.

    Args:
        G: a :class:`~eg3d_invert.generator.TriPlaneGenerator` (not modified: the noise maps are
            optimised in a copy).
        image: the aligned photo: ``uint8 (H, W, 3)`` (numpy/torch/PIL) or float ``(1, 3, H, W)``
            in [-1, 1]; square, resized to ``G.img_resolution`` if needed.
        camera: its camera: a :class:`~eg3d_invert.camera.Camera` of one view or a label
            ``(25,)``/``(1, 25)``.
        space: ``'w'`` or ``'w+'``; overrides ``settings.space`` when given.
        settings: :class:`ProjectionSettings`; default: ``ProjectionSettings.from_preset(preset)``.
        preset: a name in :data:`PROJECTION_PRESETS` (``'official'``: EG3D-projector's values; ``'fast'``).
        lpips_model: a prebuilt LPIPS module (default: :func:`load_lpips` of ``settings.lpips_net``).
        callback: called with a :class:`Progress` after every step; returning True stops early
            (the pivot is returned with ``stop_reason='callback'``). ``progress.extra['snapshot']``
            is a zero-argument function returning the current :class:`Pivot`.
    Returns:
        :class:`Pivot` with ``ws (1, num_ws, w_dim)`` on the CPU.
    Raises:
        NonFiniteLossError: a step's loss is NaN/inf (the error names the step).
        InterruptedRun: on KeyboardInterrupt; its ``partial`` attribute holds the pivot so far.
    """
    settings = settings if settings is not None else ProjectionSettings.from_preset(preset)
    if space is not None:
        settings = settings.replace(space=space)
    dev = G.device
    target = prepare_image(image, G.img_resolution, dev)
    label = as_label(camera, dev)
    if lpips_model is None:
        lpips_model = load_lpips(settings.lpips_net, device=dev)
    distance = PerceptualDistance(lpips_model, target, settings.loss_resolution)
    coarse = None
    if settings.coarse_steps:
        res = coarse_resolution(settings, G.neural_rendering_resolution)
        small = F.interpolate(target, size=(res, res), mode="area")
        coarse = {"resolution": res, "target": small, "distance": PerceptualDistance(lpips_model, small, None)}
    gen = seeded_generator(settings.seed, dev)
    cond = frontal_label(G, dev)
    w_avg, w_std = w_statistics(G, settings.w_avg_samples, settings.w_avg_seed, cond)

    # Work on a copy: the noise maps are optimised in place of its buffers, and renders of the
    # caller's G (e.g. from a progress callback) must not see them.
    G_work = copy.deepcopy(G).eval().requires_grad_(False)
    noise: dict[str, torch.Tensor] = {}
    if settings.optimize_noise:
        for name in noise_buffer_names(G_work):
            noise[name] = torch.randn(G_work.get_buffer(name).shape, generator=gen, device=dev).requires_grad_(True)
            set_buffer(G_work, name, noise[name])

    correction = None
    if settings.camera.enabled:
        correction = CameraCorrection(settings.camera.rotation_sigma_deg, settings.camera.translation_sigma,
                                      camera_sphere(G)[0]).to(dev)

    num_steps, num_ws = settings.num_steps, G.num_ws
    history: list[dict[str, float]] = []
    state = {"step": 0}

    start = _search_start(G_work, w_avg, settings, label, cond, distance, gen) if settings.init == "search" else w_avg
    w_opt = (start.repeat(1, num_ws, 1) if settings.space == "w+" else start.clone()).requires_grad_(True)
    groups = [{"params": [w_opt] + list(noise.values()), "lr": 0.0}]
    if correction is not None:
        groups.append({"params": list(correction.parameters()), "lr": 0.0})
    optimizer = torch.optim.Adam(groups, betas=settings.betas)
    params = [p for g in groups for p in g["params"]]

    def snapshot(reason: str = "running") -> Pivot:
        with torch.no_grad():
            ws = w_opt.detach().expand(1, num_ws, -1).clone().cpu()
            cam = (correction(label) if correction is not None else label).detach().cpu()
        return Pivot(ws=ws, camera=cam, space=settings.space, camera_estimate=label.detach().cpu(),
                     noise={k: v.detach().clone().cpu() for k, v in noise.items()} or None,
                     settings=settings.to_dict(), history=list(history), steps=state["step"], stop_reason=reason,
                     camera_correction=correction.summary() if correction is not None else None,
                     source=G.checkpoint_path)

    stop_reason = "completed"
    try:
        for step in range(num_steps):
            lr = learning_rate_at(step, num_steps, settings.learning_rate, settings.lr_rampup, settings.lr_rampdown)
            ramp = lr / settings.learning_rate
            optimizer.param_groups[0]["lr"] = lr
            if correction is not None:
                optimizer.param_groups[1]["lr"] = settings.camera.learning_rate * ramp
            sigma = latent_noise_scale(step, num_steps, w_std, settings.initial_noise_factor, settings.noise_ramp)
            ws = w_opt + torch.randn(w_opt.shape, generator=gen, device=dev) * sigma
            if settings.space == "w":
                ws = ws.repeat(1, num_ws, 1)
            c = correction(label) if correction is not None else label
            if coarse is not None and step < settings.coarse_steps:
                img = G_work.synthesis(ws, c, coarse["resolution"], noise_mode="const",
                                       sample_mult=settings.coarse_sample_mult, deterministic=settings.deterministic_render,
                                       generator=gen, run_superresolution=False)["image_raw"]
                goal, lp = coarse["target"], coarse["distance"](img).sum()
            else:
                img = G_work.synthesis(ws, c, noise_mode="const", sample_mult=settings.sample_mult,
                                       deterministic=settings.deterministic_render, generator=gen)["image"]
                goal, lp = target, distance(img).sum()
            loss = lp
            parts = {"lpips": float(lp.detach())}
            if settings.l2_weight > 0:
                l2 = F.mse_loss(img, goal)
                loss = loss + settings.l2_weight * l2
                parts["l2"] = float(l2.detach())
            if noise:
                reg = noise_regularization(list(noise.values()))
                loss = loss + settings.noise_regularization * reg
                parts["noise_reg"] = float(reg.detach())
            if correction is not None:
                loss = loss + settings.camera.prior_weight * correction.prior()
            check_finite(loss, "projection", step + 1, num_steps, parts)

            grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads):
                p.grad = g
            optimizer.step()
            with torch.no_grad():
                for buf in noise.values():
                    buf -= buf.mean()
                    buf *= buf.square().mean().rsqrt()
            state["step"] = step + 1
            if log_step(history, "project", step + 1, num_steps, loss, lr, parts, correction, callback, snapshot):
                stop_reason = "callback"
                break
    except KeyboardInterrupt:
        partial = snapshot("interrupted")
        err = InterruptedRun(f"projection interrupted after {state['step']}/{num_steps} steps; "
                             f"the pivot so far is available as the error's .partial")
        err.partial = partial
        raise err from None
    finally:
        release_scratch()  # the plane lookup's backward buffer (generator.planes)
    return snapshot(stop_reason)
