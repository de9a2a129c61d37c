"""What an inversion returns: :class:`InversionResult`, a plain data object with one-line conveniences.

::

    result = inverter.invert("portrait.jpg")
    result.render(yaw=30).save("left.png")                   # PIL image, G.img_resolution square
    result.views([-30, 0, 30]).save("views.png")             # captioned grid
    result.video("orbit.mp4")                                # the official gen_videos orbit
    result.mesh().export("head.glb")                         # trimesh, world units, vertex colours
    result.save("portrait_result/")                          # reload with InversionResult.load(...)

Rendering is done by :mod:`eg3d_invert.render` and the folder format by
:mod:`eg3d_invert.result_folder`; the methods here only call them.

**Angles** are geometric degrees: ``yaw`` is the camera's azimuth about the head, positive toward
the subject's left (the face turns toward image-left), ``pitch`` its elevation, positive with the
camera above the eyes; ``(0, 0)`` is the frontal view. Cameras sit on the checkpoint's camera
sphere (radius 2.7 for FFHQ) and look at its pivot, as in the official scripts.
``fov_deg=None`` keeps the FFHQ focal length (4.2647, about 18.8 degrees).

**Resolution** arguments are the *neural rendering* resolution (the ray grid, the checkpoint's by
default: 128 for ffhq512-128); images always come out at the super-resolution's size
``G.img_resolution``; depth maps at the ray grid's.

Renders are deterministic (no depth jitter, stored noise), so a saved and reloaded result
renders the same pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import PIL.Image
import torch

from . import result_folder
from .camera import label_angles
from .inversion import Pivot, TuningResult
from .options import DEFAULT_FPS, DEFAULT_FRAMES, DEFAULT_MESH_LEVEL, DEFAULT_MESH_RESOLUTION, RENDER_SAMPLE_MULT
from .preprocessing import AlignedFace
from .render import DepthMaps, Scene, ViewSet, extract_mesh, render_depth, render_orbit_video, render_views
from .render.video import VideoInfo
from .render.views import DEFAULT_PITCHES, DEFAULT_YAWS, image_grid, render_batches, tensor_to_pil

#: Views and depth maps are rendered one camera per generator call: batched float arithmetic
#: differs in the last bits with the batch's size, which changed a few pixels by one level, so
#: ``result.render(yaw=15)`` would not always equal ``views/yaw+015_pitch+000.png`` rendered among
#: other views. One at a time, every image depends only on its own camera (~1.4x slower on CPU
#: for the tiny test checkpoints, little for the real one). The video stays batched (its frames
#: are always rendered as the same whole orbit, and H.264 is lossy anyway).
VIEW_BATCH_SIZE = 1


@dataclass(frozen=True, eq=False)
class InversionResult:
    """One photo turned into a 3D head: the aligned crop, the pivot and the tuned generator.

    Immutable: the tri-planes are computed once at construction (:attr:`scene`) and every render
    method reuses them. Do not modify :attr:`generator` in place (the planes would not follow).

    Attributes:
        aligned: the :class:`~eg3d_invert.preprocessing.AlignedFace` (512x512 crop, label, pose).
        tuning: the :class:`~eg3d_invert.inversion.TuningResult` (tuned generator, pivot with
            the camera used to render the photo, tuning history).
        settings: what produced it: ``projection``, ``tuning`` (settings dicts), ``aligner``,
            ``face_index``, ``checkpoint`` (path, sha256, name), ``device``, ``photo``.
        timings: seconds per stage (``align``, ``project``, ``tune``, ``finalize``).
        metrics: at the input view, rendered deterministically: ``lpips`` (with
            ``lpips_net`` and whether its backbone is ``pretrained``), ``psnr_db`` (images in
            [-1, 1], not quantised; None if identical) and the ``resolution`` compared.
        scene: :class:`~eg3d_invert.render.Scene` of the tuned generator and the pivot's ws.
    """

    aligned: AlignedFace
    tuning: TuningResult
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    scene: Scene = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "scene", Scene.from_ws(self.tuning.generator, self.tuning.pivot.ws))

    # --- the parts --------------------------------------------------------------------------

    @property
    def pivot(self) -> Pivot:
        """The projected latent ``ws (1, num_ws, w_dim)`` with the photo's (final) camera."""
        return self.tuning.pivot

    @property
    def generator(self):
        """The tuned :class:`~eg3d_invert.generator.TriPlaneGenerator`."""
        return self.tuning.generator

    @property
    def camera(self) -> torch.Tensor:
        """The label ``(1, 25)`` the photo is rendered from (refined if camera refinement was on)."""
        return self.pivot.camera

    # --- rendering ----------------------------------------------------------------------------

    def render(self, yaw: float = 0.0, pitch: float = 0.0, fov_deg: float | None = None,
               resolution: int | None = None, *, sample_mult: float = RENDER_SAMPLE_MULT) -> PIL.Image.Image:
        """One view at geometric ``yaw``/``pitch`` degrees as an RGB image of ``G.img_resolution`` pixels."""
        return self.view_set([yaw], [pitch], fov_deg=fov_deg, resolution=resolution,
                             sample_mult=sample_mult).images[0]

    def input_view(self, resolution: int | None = None, *, sample_mult: float | None = None) -> torch.Tensor:
        """The render from the photo's own camera, ``(1, 3, R, R)`` in about [-1, 1] (what the
        inversion matched to the photo; ``sample_mult`` defaults to the tuning's, so this is
        the image the metrics were taken on)."""
        mult = self.tuning.settings.get("sample_mult", RENDER_SAMPLE_MULT) if sample_mult is None else sample_mult
        label = self.camera.to(self.scene.device)
        return next(render_batches(self.scene, label, resolution=resolution, deterministic=True, sample_mult=mult,
                                   batch_size=1, generator=None))[1]["image"]

    def reconstruction(self, resolution: int | None = None, *,
                       sample_mult: float | None = None) -> PIL.Image.Image:
        """:meth:`input_view` as an RGB image."""
        return tensor_to_pil(self.input_view(resolution, sample_mult=sample_mult))[0]

    def view_set(self, yaws: Sequence[float] | float = DEFAULT_YAWS, pitches: Sequence[float] | float = DEFAULT_PITCHES,
                 *, fov_deg: float | None = None, resolution: int | None = None,
                 sample_mult: float = RENDER_SAMPLE_MULT, progress=None) -> ViewSet:
        """Views at every ``(yaw, pitch)`` pair (degrees, broadcast against each other), as a
        :class:`~eg3d_invert.render.ViewSet` (images, angles, depth, opacity; ``.save(dir)``)."""
        return render_views(self.scene, yaws, pitches, fov_deg=fov_deg, resolution=resolution,
                            sample_mult=sample_mult, deterministic=True, batch_size=VIEW_BATCH_SIZE,
                            progress=progress)

    def views(self, yaws: Sequence[float] | float = DEFAULT_YAWS, pitches: Sequence[float] | float = DEFAULT_PITCHES,
              *, ncols: int | None = None, fov_deg: float | None = None, resolution: int | None = None,
              sample_mult: float = RENDER_SAMPLE_MULT) -> PIL.Image.Image:
        """A captioned grid of views (``ncols`` per row, default one row); angles as :meth:`view_set`."""
        return self.view_set(yaws, pitches, fov_deg=fov_deg, resolution=resolution,
                             sample_mult=sample_mult).grid(ncols)

    def depth_maps(self, yaws: Sequence[float] | float = DEFAULT_YAWS,
                   pitches: Sequence[float] | float = DEFAULT_PITCHES, *, fov_deg: float | None = None,
                   resolution: int | None = None, sample_mult: float = RENDER_SAMPLE_MULT,
                   progress=None) -> DepthMaps:
        """Depth and opacity of several views (:class:`~eg3d_invert.render.DepthMaps`; ``.save(dir)``
        writes colour-mapped PNGs and raw ``.npy``); the same maps :meth:`view_set` carries."""
        return render_depth(self.scene, yaws, pitches, fov_deg=fov_deg, resolution=resolution,
                            sample_mult=sample_mult, deterministic=True, batch_size=VIEW_BATCH_SIZE,
                            progress=progress)

    def depth(self, yaw: float = 0.0, pitch: float = 0.0, fov_deg: float | None = None,
              resolution: int | None = None, *, sample_mult: float = RENDER_SAMPLE_MULT) -> np.ndarray:
        """Depth ``(r, r)`` float32 of one view: expected distance along each unit ray from the
        camera centre, world units (the camera is 2.7 units from the origin; the head is about
        0.5 wide), at the neural rendering resolution ``r``."""
        return self.depth_maps([yaw], [pitch], fov_deg=fov_deg, resolution=resolution,
                               sample_mult=sample_mult).depth[0]

    def video(self, path: str | os.PathLike, frames: int = DEFAULT_FRAMES, fps: float = DEFAULT_FPS, *,
              fov_deg: float | None = None, resolution: int | None = None, sample_mult: float = RENDER_SAMPLE_MULT,
              progress=None) -> VideoInfo:
        """Write the official ``gen_videos.py`` orbit (one loop of ``frames`` at ``fps``) as H.264 mp4,
        atomically."""
        return render_orbit_video(self.scene, path, frames=frames, fps=fps, fov_deg=fov_deg, resolution=resolution,
                                  sample_mult=sample_mult, deterministic=True, progress=progress)

    def mesh(self, resolution: int = DEFAULT_MESH_RESOLUTION, level: float = DEFAULT_MESH_LEVEL, *, progress=None):
        """Marching-cubes mesh of the density at ``level`` (official 10) on a ``resolution^3``
        lattice over the tri-plane box, border trimmed as officially, vertex colours from the
        rendered colour features; world units in EG3D's frame (+y up, face toward +z).

        Returns a ``trimesh.Trimesh``; raises :class:`~eg3d_invert.errors.EmptyMeshError` if the
        density never reaches ``level``.
        """
        return extract_mesh(self.scene, resolution=resolution, level=level, progress=progress)

    def side_by_side(self) -> PIL.Image.Image:
        """The aligned input (at the generator's size) next to :meth:`reconstruction`, captioned."""
        recon = self.reconstruction()
        photo = PIL.Image.fromarray(self.aligned.image)
        if photo.size != recon.size:
            photo = photo.resize(recon.size, PIL.Image.Resampling.BILINEAR)
        return image_grid([photo, recon], ["input (aligned)", "reconstruction"])

    # --- files (the folder format is eg3d_invert.result_folder's) ----------------------------

    def report(self) -> dict[str, Any]:
        """What ``report.json`` holds besides its ``files`` list and render options."""
        return result_folder.report_document(self)

    def camera_dict(self) -> dict[str, Any]:
        """What ``camera.json`` holds."""
        return result_folder.camera_document(self)

    def save(self, directory: str | os.PathLike) -> dict[str, int]:
        """Write the result into ``directory`` (see :func:`~eg3d_invert.result_folder.save_result`);
        returns ``{file name: size in bytes}``."""
        return result_folder.save_result(self, directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, base=None, device: str | torch.device | None = None
             ) -> "InversionResult":
        """Read a folder written by :meth:`save` or the command line (see
        :func:`~eg3d_invert.result_folder.load_result`)."""
        return result_folder.load_result(directory, base=base, device=device)

    def __repr__(self) -> str:
        yaw, pitch = (float(a[0]) for a in label_angles(self.camera.reshape(-1, 25)[:1]))
        lp = self.metrics.get("lpips")
        return (f"InversionResult(source={self.aligned.source!r}, yaw={yaw:.1f}, pitch={pitch:.1f}, "
                f"space={self.pivot.space!r}, project_steps={self.pivot.steps}, tune_steps={self.tuning.steps}"
                + (f", lpips={lp:.4f}" if isinstance(lp, float) else "") + ")")


__all__ = ["InversionResult", "VIEW_BATCH_SIZE", "RENDER_SAMPLE_MULT"]
