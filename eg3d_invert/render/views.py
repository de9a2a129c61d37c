"""Novel views: render a set of (yaw, pitch) cameras from tri-planes computed once.

Angles are **geometric degrees** (see :func:`eg3d_invert.camera.camera_from_angles`): yaw is
the azimuth of the camera, positive toward +x (the subject's left, so the face turns toward
image-left), pitch its elevation, positive above the head. Cameras sit on the scene's sphere
(``radius`` about the world origin) and look at its pivot, as in the official scripts.

Defaults chosen for *final* renders, where quality and reproducibility matter more than speed:

* ``sample_mult=2``: twice the depth samples, as ``gen_videos.py`` does to avoid flicker and
  banding (its ``--sample_mult`` default);
* ``deterministic=True``: no random jitter of the depth samples, so the same scene renders the
  same pixels every time (re-rendering a saved result must reproduce it). Pass
  ``deterministic=False`` (optionally with a seeded ``generator``) for the official stochastic
  sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch

from .._io import atomic_path
from ..options import DEFAULT_PITCHES, DEFAULT_YAWS
from .scene import Scene, angle_pairs, resolve_focal

#: A progress callback: ``progress(done, total)`` after every batch.
Progress = Callable[[int, int], None]



def tensor_to_pil(images: torch.Tensor) -> list[PIL.Image.Image]:
    """``(B, 3, H, W)`` float in about ``[-1, 1]`` -> RGB PIL images.

    Uses the official conversion ``clamp(x * 127.5 + 128, 0, 255)`` (``gen_samples.py``), so
    our PNGs match the official scripts' byte for byte for equal renders.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    arr = (images.detach().permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()
    return [PIL.Image.fromarray(a, "RGB") for a in arr]


def view_label(yaw: float, pitch: float) -> str:
    """Human label of a view, e.g. ``'yaw -30°  pitch +0°'``."""
    return f"yaw {yaw:+.0f}°  pitch {pitch:+.0f}°"


def view_stem(yaw: float, pitch: float) -> str:
    """File-name stem of a view, e.g. ``'yaw-030_pitch+000'`` (sortable, no spaces or degrees)."""
    def fmt(v: float) -> str:
        return f"{v:+04.0f}" if float(v).is_integer() else f"{v:+06.1f}"
    return f"yaw{fmt(yaw)}_pitch{fmt(pitch)}"


def _font(size: int) -> PIL.ImageFont.ImageFont:
    try:
        return PIL.ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return PIL.ImageFont.load_default()


def image_grid(images: Sequence[PIL.Image.Image], labels: Sequence[str] | None = None, ncols: int | None = None, *,
               padding: int = 4, background: tuple[int, int, int] = (255, 255, 255)) -> PIL.Image.Image:
    """Tile images (all the same size) row by row, with an optional caption under each.

    ``ncols`` defaults to all images in one row. The result has size
    ``(ncols * (w + padding) + padding, nrows * (h + caption + padding) + padding)``.
    """
    if not images:
        raise ValueError("image_grid needs at least one image")
    w, h = images[0].size
    if any(im.size != (w, h) for im in images):
        raise ValueError(f"all grid images must be {w}x{h}, got {[im.size for im in images]}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    ncols = int(ncols or len(images))
    if ncols < 1:
        raise ValueError(f"ncols must be positive, got {ncols}")
    nrows = -(-len(images) // ncols)
    font_size = max(10, w // 18)
    caption = font_size + 2 * max(2, font_size // 4) if labels is not None else 0
    grid = PIL.Image.new("RGB", (ncols * (w + padding) + padding, nrows * (h + caption + padding) + padding), background)
    draw = PIL.ImageDraw.Draw(grid)
    font = _font(font_size)
    for k, im in enumerate(images):
        r, c = divmod(k, ncols)
        x, y = padding + c * (w + padding), padding + r * (h + caption + padding)
        grid.paste(im.convert("RGB"), (x, y))
        if labels is not None:
            box = draw.textbbox((0, 0), labels[k], font=font)
            tx = x + (w - (box[2] - box[0])) // 2
            ty = y + h + (caption - (box[3] - box[1])) // 2 - box[1]
            draw.text((tx, ty), labels[k], fill=(0, 0, 0), font=font)
    return grid


@dataclass(frozen=True, eq=False)  # holds images and arrays
class ViewSet:
    """Rendered views and the camera angles they were rendered from.

    Attributes:
        images: ``B`` RGB images of the generator's output size (``G.img_resolution``).
        yaws, pitches: ``(B,)`` float64, geometric degrees.
        depth: ``(B, r, r)`` float32 expected distance along each unit ray (world units, the
            official ``image_depth``) at the neural rendering resolution ``r``; free with the render.
        opacity: ``(B, r, r)`` float32 accumulated alpha in ``[0, 1]``, also free with the render
            (:meth:`DepthMaps.from_views <eg3d_invert.render.depth.DepthMaps.from_views>`).
    """

    images: tuple[PIL.Image.Image, ...]
    yaws: np.ndarray
    pitches: np.ndarray
    depth: np.ndarray
    opacity: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labels(self) -> list[str]:
        return [view_label(y, p) for y, p in zip(self.yaws, self.pitches)]

    def grid(self, ncols: int | None = None, *, labels: bool = True, padding: int = 4) -> PIL.Image.Image:
        """All views tiled (``ncols`` per row, default one row) and captioned with their angles."""
        return image_grid(self.images, self.labels if labels else None, ncols, padding=padding)

    def save(self, directory: str | Path, *, grid_name: str | None = "views.png",
             ncols: int | None = None) -> list[Path]:
        """Write one PNG per view (``yaw+015_pitch+000.png``) and the captioned grid, atomically.

        Returns the written paths (views first, grid last).
        """
        directory = Path(directory)
        paths = []
        for im, y, p in zip(self.images, self.yaws, self.pitches):
            paths.append(save_png(im, directory / f"{view_stem(y, p)}.png"))
        if grid_name:
            paths.append(save_png(self.grid(ncols), directory / grid_name))
        return paths


def save_png(image: PIL.Image.Image, path: str | Path) -> Path:
    """Save a PIL image atomically (a crash never leaves a truncated PNG at ``path``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path


def render_batches(scene: Scene, labels: torch.Tensor, *, resolution: int | None, deterministic: bool,
                   sample_mult: float, batch_size: int, generator: torch.Generator | None,
                   run_superresolution: bool = True, progress: Progress | None = None):
    """Yield ``(start, G.render output)`` for consecutive batches of camera labels ``(B, 25)``.

    Shared by views and video: the scene's planes (batch 1) are rendered from ``batch_size``
    cameras per call.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if sample_mult <= 0:
        raise ValueError(f"sample_mult must be positive, got {sample_mult}")
    if resolution is not None and resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    G = scene.generator
    total = labels.shape[0]
    for start in range(0, total, batch_size):
        c = labels[start:start + batch_size]
        with torch.no_grad():
            out = G.render(scene.planes, c, scene.ws, neural_rendering_resolution=resolution,
                           deterministic=deterministic, sample_mult=sample_mult, generator=generator,
                           run_superresolution=run_superresolution)
        yield start, out
        if progress is not None:
            progress(min(start + batch_size, total), total)


def render_views(scene: Scene, yaws=DEFAULT_YAWS, pitches=DEFAULT_PITCHES, *, resolution: int | None = None,
                 focal: float | None = None, fov_deg: float | None = None, deterministic: bool = True,
                 sample_mult: float = 2, batch_size: int = 4, generator: torch.Generator | None = None,
                 progress: Progress | None = None) -> ViewSet:
    """Render the scene from every ``(yaw, pitch)`` pair (degrees, broadcast against each other).

    Args:
        yaws, pitches: geometric degrees; e.g. ``yaws=[-30, 0, 30], pitches=0`` gives three views.
        resolution: neural rendering resolution override (default the generator's, 128 for
            ffhq512-128); the output size is always the super-resolution's ``G.img_resolution``.
        focal / fov_deg: normalised focal length, or field of view in degrees (official
            formula); default the FFHQ label focal 4.2647.
        deterministic, sample_mult: see the module docstring (defaults: True, 2).
        batch_size: cameras per generator call (memory grows linearly with it).
        generator: torch RNG for the stochastic sampling (``deterministic=False``).
        progress: called as ``progress(done, total)`` after every batch.
    """
    yaw, pitch = angle_pairs(yaws, pitches)
    labels = scene.cameras(yaw, pitch, focal=resolve_focal(focal, fov_deg)).label
    images, depths, alphas = [], [], []
    for _, out in render_batches(scene, labels, resolution=resolution, deterministic=deterministic,
                                 sample_mult=sample_mult, batch_size=batch_size, generator=generator,
                                 progress=progress):
        images.extend(tensor_to_pil(out["image"]))
        depths.append(out["image_depth"][:, 0].float().cpu().numpy())
        alphas.append(out["image_opacity"][:, 0].float().cpu().numpy())
    return ViewSet(tuple(images), yaw, pitch, np.concatenate(depths), np.concatenate(alphas))


def render_view(scene: Scene, yaw: float = 0.0, pitch: float = 0.0, **kwargs) -> PIL.Image.Image:
    """One view (degrees); keyword arguments as :func:`render_views`."""
    return render_views(scene, [yaw], [pitch], **kwargs).images[0]


__all__ = ["ViewSet", "render_views", "render_view", "image_grid", "tensor_to_pil", "view_label", "view_stem",
           "save_png", "DEFAULT_YAWS", "DEFAULT_PITCHES"]
