"""The orbit video of ``gen_videos.py``: the camera circles the face once, as an H.264 mp4.

Camera path (:func:`eg3d_invert.camera.orbit_poses`, the official one): frame ``i`` of ``n``
uses ``horizontal = pi/2 + 0.35 sin(2 pi i/n)`` and ``vertical = pi/2 - 0.05 + 0.25 cos(2 pi i/n)``
in the official sampler's radians (there a larger ``vertical`` is lower, so the loop starts with
the camera below the eye line and circles once), on the sphere of ``radius`` about the world
origin, looking at the pivot. The official script renders
``w_frames = 120`` frames per keyframe at **60 fps**; with one subject that is one loop of 120
frames (2 s), our defaults. ``sample_mult=2`` is its default too.

Encoding: libx264 through imageio-ffmpeg (its bundled binary, so it works offline), ``yuv420p``
so every player opens it, constant quality ``crf`` (18: visually lossless for renders; the
official uses a 10 Mbit/s bitrate instead), ``+faststart`` for web playback. The file is written
to a temporary name and renamed when complete: an interrupted run never leaves a half video.

Frames are rendered in batches from the scene's tri-planes (computed once) and streamed to the
encoder, so memory does not grow with the number of frames. The optional depth video needs all
depth maps first (one colour scale for the whole loop, not per-frame min-max as officially,
which flickers); they are small (``frames x r x r`` floats) and kept in memory.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import imageio.v2 as imageio
import numpy as np
import PIL.Image
import torch

from .._io import atomic_path
from ..camera import intrinsics_matrix, make_label, orbit_poses
from ..options import DEFAULT_FPS, DEFAULT_FRAMES
from .depth import colorize_depth, depth_range
from .scene import Scene, resolve_focal
from .views import Progress, render_batches, tensor_to_pil



@dataclass(frozen=True)
class VideoInfo:
    """What :func:`render_orbit_video` wrote."""

    path: Path
    depth_path: Path | None
    frames: int
    fps: float
    size: tuple[int, int]


def orbit_labels(scene: Scene, frames: int, *, yaw_range: float = 0.35, pitch_range: float = 0.25,
                 focal: float | None = None, fov_deg: float | None = None) -> torch.Tensor:
    """Camera labels ``(frames, 25)`` of the official orbit around the scene's pivot."""
    c2w = orbit_poses(frames, yaw_range=yaw_range, pitch_range=pitch_range, lookat=scene.lookat,
                      radius=scene.radius, device=scene.device)
    k = intrinsics_matrix(resolve_focal(focal, fov_deg), device=scene.device)
    return make_label(c2w, k.expand(frames, 3, 3))


@contextlib.contextmanager
def _mp4_writer(path: Path, fps: float, crf: int) -> Iterator:
    """An imageio-ffmpeg H.264 writer on a temporary path, renamed onto ``path`` only on success."""
    with atomic_path(path) as tmp:
        # macro_block_size=2: yuv420p only needs even sizes; imageio's default (16) would rescale.
        writer = imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    pixelformat="yuv420p", quality=None, macro_block_size=2,
                                    ffmpeg_log_level="error",
                                    ffmpeg_params=["-crf", str(int(crf)), "-preset", "medium",
                                                   "-movflags", "+faststart"])
        try:
            yield writer
        except BaseException:
            with contextlib.suppress(Exception):  # keep the original error; the temp file is removed
                writer.close()
            raise
        writer.close()


def _even(n: int) -> int:
    return n + (n % 2)


def render_orbit_video(scene: Scene, path: str | Path, *, frames: int = DEFAULT_FRAMES, fps: float = DEFAULT_FPS,
                       yaw_range: float = 0.35, pitch_range: float = 0.25, resolution: int | None = None,
                       focal: float | None = None, fov_deg: float | None = None, deterministic: bool = True,
                       sample_mult: float = 2, batch_size: int = 4, crf: int = 18,
                       depth_path: str | Path | None = None, generator: torch.Generator | None = None,
                       progress: Progress | None = None) -> VideoInfo:
    """Render the official orbit and write it as an mp4 (and optionally a depth mp4).

    Args:
        path: output ``.mp4``.
        frames: frames in the loop (official 120); fps: frame rate (official 60).
        yaw_range, pitch_range: orbit amplitudes in the official sampler's radians (0.35, 0.25).
        resolution: neural rendering resolution override; frames are ``G.img_resolution`` square.
        focal / fov_deg: as :func:`eg3d_invert.render.views.render_views` (default 4.2647, the
            official ``--cfg FFHQ`` focal).
        deterministic, sample_mult: see :mod:`eg3d_invert.render.views` (True, 2).
        batch_size: frames per generator call.
        crf: x264 constant rate factor (lower = better, 18 ~ visually lossless).
        depth_path: if given, also write the colour-mapped depth (nearer brighter, one scale
            for the whole loop), upsampled to the frame size.
        progress: ``progress(done_frames, frames)`` after every batch.
    """
    if frames < 1:
        raise ValueError(f"frames must be positive, got {frames}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    labels = orbit_labels(scene, frames, yaw_range=yaw_range, pitch_range=pitch_range, focal=focal, fov_deg=fov_deg)
    depths = [] if depth_path is not None else None
    size = None
    with _mp4_writer(path, fps, crf) as writer:
        for _, out in render_batches(scene, labels, resolution=resolution, deterministic=deterministic,
                                     sample_mult=sample_mult, batch_size=batch_size, generator=generator,
                                     progress=progress):
            for im in tensor_to_pil(out["image"]):
                if size is None:
                    size = (_even(im.width), _even(im.height))
                if im.size != size:
                    im = im.resize(size, PIL.Image.Resampling.BICUBIC)
                writer.append_data(np.asarray(im))
            if depths is not None:
                depths.append(out["image_depth"][:, 0].float().cpu().numpy())

    written_depth = None
    if depths is not None:
        written_depth = write_depth_video(np.concatenate(depths), depth_path, fps=fps, size=size, crf=crf)
    return VideoInfo(path, written_depth, frames, float(fps), size)


def write_depth_video(depth: np.ndarray, path: str | Path, *, fps: float = DEFAULT_FPS,
                      size: tuple[int, int] | None = None, crf: int = 18, cmap: str = "inferno") -> Path:
    """Write depth maps ``(F, r, r)`` as a colour-mapped mp4, one robust scale for all frames.

    No opacity is available from the colour render, so the range is the 1st-99th percentile of
    all pixels; the background (far) ends up dark.
    """
    path = Path(path)
    near, far = depth_range(depth)
    with _mp4_writer(path, fps, crf) as writer:
        for d in depth:
            im = PIL.Image.fromarray(colorize_depth(d, near=near, far=far, cmap=cmap), "RGB")
            target = size or (_even(im.width), _even(im.height))
            if im.size != target:
                im = im.resize(target, PIL.Image.Resampling.BICUBIC)
            writer.append_data(np.asarray(im))
    return path


__all__ = ["render_orbit_video", "write_depth_video", "orbit_labels", "VideoInfo", "DEFAULT_FRAMES", "DEFAULT_FPS"]
