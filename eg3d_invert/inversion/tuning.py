"""Pivotal tuning (PTI): fine-tune a copy of the generator so the pivot renders the photo.

Re-implemented from danielroich/PTI's ``SingleIDCoach`` / ``BaseCoach`` and EG3D-projector's
``SingleImageCoach``: every step renders the fixed pivot ``ws`` from the photo's camera (depth
samples x2), computes ``l2_weight * MSE + lpips_weight * LPIPS(alex)`` on the full image in
[-1, 1], stops *before* stepping once LPIPS <= ``lpips_threshold``, else takes an Adam step
(lr 3e-4) on all generator parameters. PTI's locality regulariser, when on, moves the pivot
``alpha = 30`` units toward a ``psi = 0.5`` sample (``pivot + alpha * (w - pivot) / |w - pivot|``,
norm over the whole ``(1, num_ws, w_dim)`` tensor), renders it with the tuned and the original
generator (``noise_mode='none'``) and penalises their difference (L2 0.1 + LPIPS 0.1).
For EG3D the samples are mapped with the frontal conditioning camera and rendered from the
photo's camera without depth jitter, so only the weights can make the two renders differ.

Not in PTI (off in its preset): the first ``coarse_steps`` steps compare the raw neural render at
a lower resolution, without super-resolution, with the photo downsampled to it
(:class:`TuningSettings`); their locality renders are raw and coarse as well.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..camera import camera_sphere
from ..errors import InterruptedRun
from ._common import (Progress, ProgressCallback, as_label, check_finite, frontal_label, install_noise,
                      learning_rate_at, log_step, prepare_image, seeded_generator)
from .camera_refine import CameraCorrection
from .losses import PerceptualDistance, load_lpips
from .results import Pivot, TuningResult
from ..generator.planes import release_scratch
from .settings import TuningSettings, coarse_resolution


def _locality_loss(G_new, G_orig, pivot_ws, label, cond, settings: TuningSettings, lpips_model, gen,
                   render: dict):
    z = torch.randn(settings.locality_samples, G_orig.z_dim, generator=gen, device=pivot_ws.device)
    with torch.no_grad():
        w_samples = G_orig.mapping(z, cond.expand(len(z), -1), truncation_psi=settings.locality_truncation)
    total = pivot_ws.new_zeros(())
    for w in w_samples:
        direction = w[None] - pivot_ws
        w_near = pivot_ws + settings.locality_alpha * direction / direction.norm()
        new = G_new.synthesis(w_near, label, noise_mode="none", deterministic=True, **render)
        new = new["image"] if "image" in new else new["image_raw"]
        with torch.no_grad():
            old = G_orig.synthesis(w_near, label, noise_mode="none", deterministic=True, **render)
            old = old["image"] if "image" in old else old["image_raw"]
        if settings.locality_l2_weight > 0:
            total = total + settings.locality_l2_weight * F.mse_loss(new, old)
        if settings.locality_lpips_weight > 0:
            total = total + settings.locality_lpips_weight * lpips_model(new, old).mean()
    return total / len(w_samples)


def tuning_optimizer(params, betas=(0.9, 0.999), lr: float = 1e-3) -> torch.optim.Optimizer:
    """PTI's Adam, as one fused kernel per step where torch has one (CPU, CUDA, MPS): the same
    update rule, without a separate pass over the ~31M parameters per arithmetic operation."""
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, ValueError, TypeError):  # a device or dtype without the fused kernel
        return torch.optim.Adam(params, lr=lr, betas=betas)


def tune(G, pivot: Pivot, image, camera=None, *, settings: TuningSettings | None = None, preset: str = "official",
         lpips_model=None, callback: ProgressCallback | None = None) -> TuningResult:
    """Fine-tune a copy of ``G`` so that ``pivot`` renders ``image`` from ``camera``.

    Args:
        G: the base :class:`~eg3d_invert.generator.TriPlaneGenerator` (left untouched).
        pivot: from :func:`~eg3d_invert.inversion.project` (or :meth:`Pivot.load`).
        image: the photo, as for :func:`project` (``uint8 (H, W, 3)`` or float ``(1, 3, H, W)``
            in [-1, 1]).
        camera: its camera (Camera or label ``(25,)``/``(1, 25)``); default: ``pivot.camera``.
        settings: :class:`TuningSettings`; default: ``TuningSettings.from_preset(preset)``.
        preset: a name in :data:`TUNING_PRESETS` (``'official'``: PTI's values; ``'fast'``).
        lpips_model: a prebuilt LPIPS module (default: :func:`load_lpips` of ``settings.lpips_net``);
            also used by the locality regulariser.
        callback: called with a :class:`Progress` after every step (and once more when the
            threshold stops the run); returning True stops early (``stop_reason='callback'``).
            ``progress.extra['snapshot']`` returns the current :class:`TuningResult`, whose
            generator is the live copy being tuned (valid until the next step).
    Returns:
        :class:`TuningResult`.
    Raises:
        NonFiniteLossError: a step's loss is NaN/inf (naming the step).
        InterruptedRun: on KeyboardInterrupt; ``partial`` holds the result so far.
    """
    settings = settings if settings is not None else TuningSettings.from_preset(preset)
    dev = G.device
    target = prepare_image(image, G.img_resolution, dev)
    if camera is None and pivot.camera is None:
        raise ValueError("the pivot has no camera: pass camera=")
    label = as_label(pivot.camera if camera is None else camera, dev)
    if lpips_model is None:
        lpips_model = load_lpips(settings.lpips_net, device=dev)
    distance = PerceptualDistance(lpips_model, target, None)
    full_render = {"sample_mult": settings.sample_mult}
    coarse = None
    if settings.coarse_steps:
        res = coarse_resolution(settings, G.neural_rendering_resolution)
        small = F.interpolate(target, size=(res, res), mode="area")
        coarse = {"target": small, "distance": PerceptualDistance(lpips_model, small, None),
                  "render": {"neural_rendering_resolution": res, "sample_mult": settings.coarse_sample_mult,
                             "run_superresolution": False}}
    gen = seeded_generator(settings.seed, dev)
    ws = pivot.ws.to(dev).detach()
    if ws.shape[1:] != (G.num_ws, G.w_dim):
        raise ValueError(f"pivot ws must be (1, {G.num_ws}, {G.w_dim}) for this generator, got {tuple(ws.shape)}")

    G_tuned = copy.deepcopy(G).eval()
    G_tuned.checkpoint_path = G_tuned.checkpoint_format = None  # it no longer is the file it was loaded from
    if settings.use_pivot_noise and pivot.noise:
        install_noise(G_tuned, pivot.noise)
    G_tuned.requires_grad_(True)
    correction = None
    if settings.camera.enabled:
        correction = CameraCorrection(settings.camera.rotation_sigma_deg, settings.camera.translation_sigma,
                                      camera_sphere(G)[0]).to(dev)
    groups = [{"params": [p for p in G_tuned.parameters()], "lr": settings.learning_rate}]
    if correction is not None:
        groups.append({"params": list(correction.parameters()), "lr": settings.camera.learning_rate})
    optimizer = tuning_optimizer(groups, settings.betas)
    base_lrs = [g["lr"] for g in groups]
    cond = frontal_label(G, dev) if settings.locality_regularization else None

    history: list[dict[str, float]] = []
    state = {"step": 0}
    num_steps = settings.num_steps

    def snapshot(reason: str = "running") -> TuningResult:
        cam = (correction(label) if correction is not None else label).detach().cpu()
        new_pivot = Pivot(ws=pivot.ws, camera=cam, space=pivot.space, camera_estimate=pivot.camera_estimate,
                          noise=pivot.noise, settings=pivot.settings, history=pivot.history, steps=pivot.steps,
                          stop_reason=pivot.stop_reason, camera_correction=pivot.camera_correction,
                          source=pivot.source)
        return TuningResult(generator=G_tuned, pivot=new_pivot, settings=settings.to_dict(), history=list(history),
                            steps=state["step"], stop_reason=reason,
                            camera_correction=correction.summary() if correction is not None else None, base=G)

    stop_reason = "max_steps"
    use_locality = True  # PTI regularises at the first step, then every `interval` steps
    try:
        for step in range(num_steps):
            # PTI keeps the rate constant (lr_rampdown 0); a cosine decay over the last steps lets a
            # short schedule use a high rate and still settle.
            scale = learning_rate_at(step, num_steps, 1.0, 0.0, settings.lr_rampdown)
            for group, base_lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base_lr * scale
            c = correction(label) if correction is not None else label
            in_coarse = coarse is not None and step < settings.coarse_steps
            render = coarse["render"] if in_coarse else full_render
            out = G_tuned.synthesis(ws, c, noise_mode="const", deterministic=settings.deterministic_render,
                                    generator=gen, **render)
            img = out["image_raw"] if in_coarse else out["image"]
            goal, dist = (coarse["target"], coarse["distance"]) if in_coarse else (target, distance)
            l2 = F.mse_loss(img, goal)
            lp = dist(img).sum()
            loss = settings.l2_weight * l2 + settings.lpips_weight * lp
            parts = {"l2": float(l2.detach()), "lpips": float(lp.detach())}
            if not in_coarse and settings.lpips_threshold > 0 and float(lp.detach()) <= settings.lpips_threshold:
                check_finite(loss, "tuning", step + 1, num_steps, parts)
                stop_reason = "threshold"
                history.append({"step": step + 1, "loss": float(loss.detach()), "lr": 0.0, **parts})
                if callback is not None:
                    callback(Progress("tune", step + 1, num_steps, float(loss.detach()), float(lp.detach()), 0.0,
                                      {"l2": parts["l2"], "stopped": "threshold", "snapshot": snapshot}))
                break
            if settings.locality_regularization and use_locality:
                loc = _locality_loss(G_tuned, G, ws, c.detach(), cond, settings, lpips_model, gen, render)
                loss = loss + loc
                parts["locality"] = float(loc.detach())
            if correction is not None:
                loss = loss + settings.camera.prior_weight * correction.prior()
            check_finite(loss, "tuning", step + 1, num_steps, parts)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            use_locality = (step + 1) % settings.locality_interval == 0
            state["step"] = step + 1
            if log_step(history, "tune", step + 1, num_steps, loss, settings.learning_rate * scale, parts, correction,
                        callback, snapshot):
                stop_reason = "callback"
                break
    except KeyboardInterrupt:
        G_tuned.requires_grad_(False)
        partial = snapshot("interrupted")
        err = InterruptedRun(f"tuning interrupted after {state['step']}/{num_steps} steps; "
                             f"the generator so far is available as the error's .partial")
        err.partial = partial
        raise err from None
    finally:
        release_scratch()  # the plane lookup's backward buffer (generator.planes)
    G_tuned.requires_grad_(False)
    for p in G_tuned.parameters():
        p.grad = None
    return snapshot(stop_reason)
