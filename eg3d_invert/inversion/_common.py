"""Helpers shared by projection and tuning: input conversion, noise maps, progress, guards."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..camera import FFHQ_FOCAL, Camera, camera_sphere, intrinsics_matrix, lookat_pose, make_label
from ..errors import NonFiniteLossError

# --- inputs ---------------------------------------------------------------------------------------


def prepare_image(image, resolution: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Any accepted photo -> ``(1, 3, resolution, resolution)`` float32 in [-1, 1].

    Accepted:
        * ``uint8`` arrays or tensors ``(H, W, 3)`` (numpy, torch) and PIL images: 0..255 RGB;
        * float tensors ``(3, H, W)`` or ``(1, 3, H, W)`` already in [-1, 1] (EG3D's range).
    The photo must be square (an aligned crop); another size is resized to ``resolution``
    with antialiased bilinear filtering.
    """
    if hasattr(image, "convert") and hasattr(image, "size") and not isinstance(image, (np.ndarray, torch.Tensor)):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"numpy images must be uint8 (H, W, 3); got dtype {image.dtype} "
                            f"(pass float images as torch tensors (1, 3, H, W) in [-1, 1])")
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a uint8 array (H, W, 3), a PIL image or a float tensor (1, 3, H, W); "
                        f"got {type(image).__name__}")
    if image.dtype == torch.uint8:
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (H, W, 3) RGB, got shape {tuple(image.shape)}")
        image = image.permute(2, 0, 1).float() / 127.5 - 1.0
    elif not image.is_floating_point():
        raise TypeError(f"image tensors must be uint8 (H, W, 3) or float (1, 3, H, W); got dtype {image.dtype}")
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"float images must be (1, 3, H, W) or (3, H, W), got shape {tuple(image.shape)}")
    if image.shape[2] != image.shape[3]:
        raise ValueError(f"the photo must be a square aligned crop, got {image.shape[3]}x{image.shape[2]} (WxH)")
    image = image.to(device=device, dtype=torch.float32)
    if image.shape[-1] != resolution:
        image = F.interpolate(image, size=(resolution, resolution), mode="bilinear", align_corners=False,
                              antialias=True)
    return image


def as_label(camera, device: torch.device | str = "cpu") -> torch.Tensor:
    """A :class:`~eg3d_invert.camera.Camera` of one view, or a label ``(25,)`` / ``(1, 25)``
    (tensor, array or list) -> label ``(1, 25)`` float32."""
    if isinstance(camera, Camera):
        label = camera.label
    else:
        label = torch.as_tensor(np.asarray(camera, dtype=np.float32) if not isinstance(camera, torch.Tensor)
                                else camera)
    label = label.to(device=device, dtype=torch.float32).reshape(-1, label.shape[-1]) if label.ndim else label
    if label.ndim != 2 or label.shape != (1, 25):
        raise ValueError(f"expected one camera: a Camera of length 1 or a label of 25 numbers, "
                         f"got shape {tuple(label.shape)}")
    if not torch.isfinite(label).all():
        raise ValueError("the camera label contains NaN or infinite numbers")
    return label


def frontal_label(G, device=None) -> torch.Tensor:
    """The frontal conditioning camera ``(1, 25)`` of the official scripts: on the checkpoint's
    camera sphere, looking at its pivot, FFHQ focal length."""
    pivot, radius = camera_sphere(G)
    c2w = lookat_pose(math.pi / 2, math.pi / 2, pivot, radius, device=device or G.device)
    return make_label(c2w, intrinsics_matrix(FFHQ_FOCAL, device=c2w.device))


# --- noise maps ------------------------------------------------------------------------------------


def noise_buffer_names(G) -> list[str]:
    """Names of the backbone's constant noise maps (``backbone.synthesis.b{res}.conv{k}.noise_const``)."""
    return [f"backbone.synthesis.{n}" for n, _ in G.backbone.synthesis.named_buffers() if n.endswith("noise_const")]


def set_buffer(G, name: str, value: torch.Tensor) -> None:
    module_name, attr = name.rsplit(".", 1)
    setattr(G.get_submodule(module_name), attr, value)


@contextlib.contextmanager
def swapped_noise(G, noise: dict[str, torch.Tensor] | None) -> Iterator[None]:
    """Temporarily replace ``G``'s constant noise maps (restored on exit, even on errors).

    Cheaper than copying the generator; the maps are put in as given (so tensors that require
    grad stay connected to an optimiser).
    """
    if not noise:
        yield
        return
    saved = {name: G.get_buffer(name) for name in noise}
    try:
        for name, value in noise.items():
            set_buffer(G, name, value)
        yield
    finally:
        for name, value in saved.items():
            set_buffer(G, name, value)


def install_noise(G, noise: dict[str, torch.Tensor]) -> None:
    """Write noise maps into ``G``'s buffers for good (used on the tuned copy)."""
    for name, value in noise.items():
        buf = G.get_buffer(name)
        if buf.shape != value.shape:
            raise ValueError(f"noise map {name}: expected shape {tuple(buf.shape)}, got {tuple(value.shape)}")
        with torch.no_grad():
            buf.copy_(value.to(buf.device, buf.dtype))


# --- progress --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What a progress callback receives after every step.

    Attributes:
        stage: ``'project'`` or ``'tune'``.
        step: steps done so far (1-based).
        total: steps planned (tuning may stop earlier at its LPIPS threshold).
        loss: total loss of this step.
        lpips: the LPIPS term of this step.
        lr: learning rate used in this step.
        extra: other per-step numbers (e.g. ``noise_reg``, ``l2``, ``locality``, camera correction).
    """

    stage: str
    step: int
    total: int
    loss: float
    lpips: float
    lr: float
    extra: dict[str, Any] = field(default_factory=dict)


#: A progress callback; returning True asks the optimisation to stop after this step (the
#: result is returned normally, marked ``stop_reason='callback'``).
ProgressCallback = Callable[[Progress], Any]


def learning_rate_at(step: int, num_steps: int, peak: float, rampup: float, rampdown: float) -> float:
    """The projector's schedule: linear warm-up over ``rampup``, cosine decay over the last
    ``rampdown`` of the schedule (fractions of ``num_steps``); 0 at step 0 as in the official code."""
    t = step / num_steps
    down = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(down * math.pi)
    ramp *= min(1.0, t / rampup) if rampup > 0 else 1.0
    return peak * ramp


def log_step(history: list[dict[str, Any]], stage: str, step: int, total: int, loss: torch.Tensor, lr: float,
             parts: dict[str, float], correction, callback: "ProgressCallback | None", snapshot) -> bool:
    """Record a finished step (1-based ``step``) in ``history`` and report it to ``callback``.

    The record holds the loss, the learning rate, every loss term and, with camera refinement,
    the current rotation corrections. Returns True when the callback asks to stop.
    """
    record = {"step": step, "loss": float(loss.detach()), "lr": lr, **parts}
    if correction is not None:
        record.update({f"camera_{k}": v for k, v in correction.summary().items() if k not in ("translation", "pivot")})
    history.append(record)
    if callback is None:
        return False
    extra = {k: v for k, v in record.items() if k not in ("step", "loss", "lpips", "lr")}
    extra["snapshot"] = snapshot
    return bool(callback(Progress(stage, step, total, record["loss"], parts["lpips"], lr, extra)))


def check_finite(loss: torch.Tensor, stage: str, step: int, total: int, parts: dict[str, float]) -> None:
    """Raise :class:`NonFiniteLossError` naming the step if ``loss`` is NaN or infinite."""
    if not bool(torch.isfinite(loss.detach())):
        detail = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
        raise NonFiniteLossError(f"{stage}: the loss became {float(loss.detach())} at step {step}/{total} ({detail}); "
                                 f"check the photo and the checkpoint for NaN/inf values; nothing was written")


def seeded_generator(seed: int, device) -> torch.Generator:
    g = torch.Generator(device=torch.device(device).type)
    g.manual_seed(int(seed))
    return g
