"""The Python API for apps: load once, invert many photos, render each result on demand.

::

    from eg3d_invert import Inverter

    inverter = Inverter.from_pretrained("ffhq512-128")      # generator, aligner, LPIPS: built once
    result = inverter.invert("portrait.jpg")                 # align -> project (W) -> tune (PTI)
    result.render(yaw=30).save("left.png")                   # PIL image, G.img_resolution square
    result.views([-30, 0, 30]).save("views.png")             # captioned grid
    result.video("orbit.mp4")                                # the official gen_videos orbit
    result.mesh().export("head.glb")                         # trimesh, world units, vertex colours
    result.save("portrait_result/")                          # reload with InversionResult.load(...)

**Angles** at this surface are geometric degrees: ``yaw`` is the camera's azimuth about the
head, positive toward the subject's left (the face turns toward image-left), ``pitch`` its
elevation, positive with the camera above the eyes; ``(0, 0)`` is the frontal view. Cameras sit
on the checkpoint's camera sphere (radius 2.7 for FFHQ) and look at its pivot, as in the
official scripts. ``fov_deg=None`` keeps the FFHQ focal length (4.2647, about 18.8 degrees).

**Resolution** arguments of the render methods are the *neural rendering* resolution (the ray
grid, the checkpoint's by default: 128 for ffhq512-128); images always come out at the
super-resolution's size ``G.img_resolution``; depth maps at the ray grid's.

**Determinism**: every random draw of :meth:`Inverter.invert` is seeded (``seed=``), so the same
photo, settings and device give the same result; renders are deterministic (no depth jitter,
stored noise), so a saved and reloaded result renders the same pixels.
"""

from __future__ import annotations

import json
import math
import os
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import PIL.Image
import torch

from ._io import write_json_atomic
from .errors import CheckpointError, ConfigError
from .inversion import (CameraRefinementSettings, PerceptualDistance, Pivot, Progress, ProjectionSettings,
                        TuningResult, TuningSettings, load_lpips, prepare_image, project, tune)
from .inversion.losses import backbone_weights_path
from .inversion.settings import LPIPS_NETS, SPACES
from .preprocessing import AlignedFace, Aligner
from .preprocessing.reading import DEFAULT_MAX_PIXELS, ImageSource, source_name
from .render import DepthMaps, Scene, ViewSet, extract_mesh, render_depth, render_orbit_video, render_views
from .render.video import DEFAULT_FPS, DEFAULT_FRAMES, VideoInfo
from .render.views import DEFAULT_PITCHES, DEFAULT_YAWS, image_grid, save_png, tensor_to_pil

#: Files :meth:`InversionResult.save` writes into its folder.
ALIGNED_PNG = "aligned.png"
CAMERA_JSON = "camera.json"
PIVOT_PT = "pivot.pt"
TUNED_SAFETENSORS = "tuned.safetensors"
RECONSTRUCTION_PNG = "reconstruction.png"
REPORT_JSON = "report.json"
RESULT_FORMAT = "eg3d-invert/result"
RESULT_VERSION = 1

#: Depth samples multiplier of the final renders (``gen_videos.py``'s default, less banding).
RENDER_SAMPLE_MULT = 2.0
#: Views and depth maps are rendered one camera per generator call: batched float arithmetic
#: differs in the last bits with the batch's size, which changed a few pixels by one level, so
#: ``result.render(yaw=15)`` would not always equal ``views/yaw+015_pitch+000.png`` rendered among
#: other views. One at a time, every image depends only on its own camera (~1.4x slower on CPU
#: for the tiny test checkpoints, little for the real one). The video stays batched (its frames
#: are always rendered as the same whole orbit, and H.264 is lossy anyway).
VIEW_BATCH_SIZE = 1

#: Progress callback of :meth:`Inverter.invert`: receives :class:`~eg3d_invert.inversion.Progress`
#: objects; returning True during projection or tuning stops that stage early.
Callback = Callable[[Progress], Any]


# --- settings ------------------------------------------------------------------------------------


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def resolve_settings(*, preset: str = "official", projector: str | None = None, steps: int | None = None,
                     pti_steps: int | None = None, seed: int | None = 0, camera_refinement: bool = False,
                     projection_lpips: str | None = None, tuning_lpips: str | None = None,
                     projection: ProjectionSettings | None = None,
                     tuning: TuningSettings | None = None) -> tuple[ProjectionSettings, TuningSettings]:
    """The projection and tuning settings that the convenience arguments describe.

    Starts from ``projection`` / ``tuning`` if given, else from the ``preset``; then each argument
    that is not None overrides its field (``projector`` -> ``space``, ``steps`` and ``pti_steps``
    -> ``num_steps``, ``seed`` -> both seeds, ``*_lpips`` -> ``lpips_net``;
    ``camera_refinement=True`` turns joint camera refinement on in both stages with its default
    settings).

    Raises:
        ConfigError: naming the argument that is wrong.
    """
    if not isinstance(preset, str):
        raise ConfigError(f"preset must be a preset name, got {preset!r}")
    if projector is not None and projector not in SPACES:
        raise ConfigError(f"projector must be one of {', '.join(SPACES)}, got {projector!r}")
    for name, value in (("steps", steps), ("pti_steps", pti_steps)):
        if value is not None and not (_is_int(value) and value > 0):
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if seed is not None and not (_is_int(seed) and seed >= 0):
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(camera_refinement, bool):
        raise ConfigError(f"camera_refinement must be True or False, got {camera_refinement!r}")
    for name, value in (("projection_lpips", projection_lpips), ("tuning_lpips", tuning_lpips)):
        if value is not None and value not in LPIPS_NETS:
            raise ConfigError(f"{name} must be one of {', '.join(LPIPS_NETS)}, got {value!r}")
    if projection is not None and not isinstance(projection, ProjectionSettings):
        raise ConfigError(f"projection must be a ProjectionSettings, got {type(projection).__name__}")
    if tuning is not None and not isinstance(tuning, TuningSettings):
        raise ConfigError(f"tuning must be a TuningSettings, got {type(tuning).__name__}")

    proj = projection if projection is not None else ProjectionSettings.from_preset(preset)
    tun = tuning if tuning is not None else TuningSettings.from_preset(preset)
    p_changes: dict[str, Any] = {}
    t_changes: dict[str, Any] = {}
    if projector is not None:
        p_changes["space"] = projector
    if steps is not None:
        p_changes["num_steps"] = int(steps)
    if pti_steps is not None:
        t_changes["num_steps"] = int(pti_steps)
    if seed is not None:
        p_changes["seed"] = t_changes["seed"] = int(seed)
    if projection_lpips is not None:
        p_changes["lpips_net"] = projection_lpips
    if tuning_lpips is not None:
        t_changes["lpips_net"] = tuning_lpips
    if camera_refinement:
        p_changes["camera"] = proj.camera if proj.camera.enabled else CameraRefinementSettings(enabled=True)
        t_changes["camera"] = tun.camera if tun.camera.enabled else CameraRefinementSettings(enabled=True)
    return proj.replace(**p_changes), tun.replace(**t_changes)


def aligner_settings(aligner: Aligner) -> dict[str, Any]:
    """The settings of an :class:`Aligner` that change its crops and labels (for reports)."""
    return {"threshold": float(aligner.detector.threshold), "min_face_size": aligner.detector.min_face_size,
            "five_points": aligner.five_points, "padding": aligner.padding, "max_pixels": aligner.max_pixels,
            "mirror_average": bool(aligner.detector.mirror_average)}


# --- shared LPIPS models -----------------------------------------------------------------------------

_LPIPS_CACHE: dict[tuple, torch.nn.Module] = {}
_LPIPS_LOCK = threading.Lock()


def shared_lpips(net: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """An LPIPS model (:func:`~eg3d_invert.inversion.load_lpips`) built once per process.

    Building one costs seconds (torchvision constructs the whole ImageNet network before the
    weights are loaded), and the models are read-only at inference (eval mode, no gradients
    for their parameters), so every :class:`Inverter` of the process shares them. The key
    includes the weight file's path, size and mtime, so a different ``TORCH_HOME`` or a replaced
    file gives a new model.
    """
    path = backbone_weights_path(net)
    stat = path.stat() if path.is_file() else None
    key = (net, str(torch.device(device)), str(path), stat.st_size if stat else None,
           stat.st_mtime_ns if stat else None)
    with _LPIPS_LOCK:
        model = _LPIPS_CACHE.get(key)
        if model is None:
            model = load_lpips(net, device=device)
            # The file may have just been downloaded: key the model by what is now on disk.
            stat = path.stat() if path.is_file() else None
            key = key[:3] + (stat.st_size if stat else None, stat.st_mtime_ns if stat else None)
            _LPIPS_CACHE[key] = model
        return model


# --- environment for reports ---------------------------------------------------------------------------


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages that determine a result (for ``report.json``)."""
    from importlib import metadata

    from . import __version__

    out: dict[str, str | None] = {"eg3d_invert": __version__, "python": platform.python_version()}
    for dist in ("torch", "numpy", "lpips", "mediapipe", "facenet-pytorch", "opencv-contrib-python-headless",
                 "scikit-image", "trimesh", "imageio-ffmpeg"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def checkpoint_info(G) -> dict[str, Any]:
    """Which checkpoint ``G`` is: path, format, SHA-256 of the file and registry name if any."""
    from .inversion.results import base_info_for

    info = dict(base_info_for(G))
    info["format"] = G.checkpoint_format
    return info


# --- results -----------------------------------------------------------------------------------------


def _stage_summary(history: list[dict[str, float]], steps: int, stop_reason: str) -> dict[str, Any]:
    """Final numbers and the per-step loss curve of one optimisation stage."""
    last = history[-1] if history else {}
    return {"steps": int(steps), "stop_reason": stop_reason, "final_loss": last.get("loss"),
            "final_lpips": last.get("lpips"),
            "loss": [round(float(h["loss"]), 6) for h in history],
            "lpips": [round(float(h["lpips"]), 6) for h in history if "lpips" in h]}


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """PSNR (dB) of images in [-1, 1] (range 2); None when they are identical."""
    mse = float(((a.clamp(-1, 1) - b.clamp(-1, 1)) ** 2).mean())
    return None if mse == 0 else 10.0 * math.log10(4.0 / mse)


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
            ``face_index``, ``checkpoint`` (path, sha256, name), ``device``.
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
        """One view at geometric ``yaw``/``pitch`` degrees (see the module docstring) as an RGB image
        of ``G.img_resolution`` pixels."""
        return self.view_set([yaw], [pitch], fov_deg=fov_deg, resolution=resolution,
                             sample_mult=sample_mult).images[0]

    def reconstruction(self, resolution: int | None = None, *,
                       sample_mult: float | None = None) -> PIL.Image.Image:
        """The render from the photo's own camera (what the inversion matched to the photo).

        ``sample_mult`` defaults to the tuning's, so this is the image the metrics were taken on.
        """
        mult = self.tuning.settings.get("sample_mult", RENDER_SAMPLE_MULT) if sample_mult is None else sample_mult
        return tensor_to_pil(self._render_input_view(resolution, mult))[0]

    def _render_input_view(self, resolution: int | None, sample_mult: float) -> torch.Tensor:
        G = self.generator
        with torch.no_grad():
            out = G.render(self.scene.planes, self.camera.to(self.scene.device), self.scene.ws,
                           neural_rendering_resolution=resolution, deterministic=True, sample_mult=sample_mult)
        return out["image"]

    def view_set(self, yaws: Sequence[float] | float = DEFAULT_YAWS, pitches: Sequence[float] | float = DEFAULT_PITCHES,
                 *, fov_deg: float | None = None, resolution: int | None = None,
                 sample_mult: float = RENDER_SAMPLE_MULT, progress=None) -> ViewSet:
        """Views at every ``(yaw, pitch)`` pair (degrees, broadcast against each other), as a
        :class:`~eg3d_invert.render.ViewSet` (images, angles, raw depth; ``.save(dir)``)."""
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
        writes colour-mapped PNGs and raw ``.npy``)."""
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

    def mesh(self, resolution: int = 256, level: float = 10.0, *, progress=None):
        """Marching-cubes mesh of the density at ``level`` (official 10) on a ``resolution^3``
        lattice over the tri-plane box, border trimmed as officially, vertex colours from the
        rendered colour features; world units in EG3D's frame (+y up, face toward +z).

        Returns a ``trimesh.Trimesh``; raises :class:`~eg3d_invert.render.EmptyMeshError` if the
        density never reaches ``level``.
        """
        return extract_mesh(self.scene, resolution=resolution, level=level, progress=progress)

    # --- files --------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """What ``report.json`` holds (without its ``files`` list): settings, versions, checkpoint,
        timings, losses and metrics."""
        yaw, pitch = _angles(self.camera)
        return {
            "format": RESULT_FORMAT, "version": RESULT_VERSION,
            "source": self.aligned.source,
            "photo": self.settings.get("photo"),
            "settings": {k: v for k, v in self.settings.items() if k != "photo"},
            "versions": package_versions(),
            "camera": {"yaw_deg": yaw, "pitch_deg": pitch, "estimate_yaw_deg": round(self.aligned.yaw, 3),
                       "estimate_pitch_deg": round(self.aligned.pitch, 3), "roll_deg": round(self.aligned.roll, 3)},
            "timings": {k: round(float(v), 4) for k, v in self.timings.items()},
            "losses": {
                "project": _stage_summary(self.pivot.history, self.pivot.steps, self.pivot.stop_reason),
                "tune": _stage_summary(self.tuning.history, self.tuning.steps, self.tuning.stop_reason),
            },
            "metrics": self.metrics,
        }

    def camera_dict(self) -> dict[str, Any]:
        """What ``camera.json`` holds: the label used to render the photo (EG3D's 25 numbers), the
        aligner's estimate and the full alignment record."""
        yaw, pitch = _angles(self.camera)
        est = self.pivot.camera_estimate
        return {
            "convention": "EG3D label: OpenCV cam2world 4x4 row-major, then normalised intrinsics 3x3 row-major; "
                          "world +y up, face toward +z; angles geometric degrees (yaw toward the subject's left, "
                          "pitch camera above)",
            "label": [float(v) for v in self.camera.reshape(-1)],
            "label_estimate": [float(v) for v in (est if est is not None else self.aligned.label).reshape(-1)],
            "yaw_deg": yaw, "pitch_deg": pitch,
            "camera_correction": self.tuning.camera_correction or self.pivot.camera_correction,
            "image": ALIGNED_PNG,
            "aligned": self.aligned.to_dict(),
        }

    def save(self, directory: str | os.PathLike) -> dict[str, int]:
        """Write the result into ``directory`` (created if needed), every file atomically:

        ``aligned.png`` (the crop), ``camera.json``, ``pivot.pt`` (ws, camera, noise, history),
        ``tuned.safetensors`` (only the tensors tuning changed, plus the base checkpoint's hash),
        ``reconstruction.png`` (input | render from the photo's camera) and, last,
        ``report.json``. Returns ``{file name: size in bytes}`` as listed in the report.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.aligned.save(directory / ALIGNED_PNG)
        write_json_atomic(directory / CAMERA_JSON, self.camera_dict())
        self.pivot.save(directory / PIVOT_PT)
        self.tuning.save_generator(directory / TUNED_SAFETENSORS, base_info=self.settings.get("checkpoint"))
        save_png(self.side_by_side(), directory / RECONSTRUCTION_PNG)
        files = {name: (directory / name).stat().st_size
                 for name in (ALIGNED_PNG, CAMERA_JSON, PIVOT_PT, TUNED_SAFETENSORS, RECONSTRUCTION_PNG)}
        write_json_atomic(directory / REPORT_JSON, {**self.report(), "files": files})
        return files

    def side_by_side(self) -> PIL.Image.Image:
        """The aligned input (at the generator's size) next to :meth:`reconstruction`, captioned."""
        recon = self.reconstruction()
        photo = PIL.Image.fromarray(self.aligned.image)
        if photo.size != recon.size:
            photo = photo.resize(recon.size, PIL.Image.Resampling.BILINEAR)
        return image_grid([photo, recon], ["input (aligned)", "reconstruction"])

    @classmethod
    def load(cls, directory: str | os.PathLike, base=None, device: str | torch.device | None = None
             ) -> "InversionResult":
        """Read a folder written by :meth:`save` (or by the ``eg3d-invert`` command).

        Args:
            base: the base checkpoint of ``tuned.safetensors`` (path, registry name or a loaded
                generator); default: the file the result records, if it is still there with the
                same SHA-256.
            device: where to put the generator (default CPU; ``'auto'`` the best available).
        Raises:
            CheckpointError: a file is missing or unreadable, or the base cannot be found.
        """
        from .pretrained import load_generator

        directory = Path(directory)
        for name in (REPORT_JSON, CAMERA_JSON, ALIGNED_PNG, PIVOT_PT, TUNED_SAFETENSORS):
            if not (directory / name).is_file():
                raise CheckpointError(f"{directory}: not a saved inversion result ({name} is missing)")
        report = _read_json(directory / REPORT_JSON)
        if report.get("format") != RESULT_FORMAT:
            raise CheckpointError(f"{directory / REPORT_JSON}: not an eg3d-invert result report")
        if int(report.get("version", 0)) > RESULT_VERSION:
            raise CheckpointError(f"{directory}: written by a newer eg3d-invert (result version {report['version']})")
        camera = _read_json(directory / CAMERA_JSON)
        image = np.asarray(PIL.Image.open(directory / ALIGNED_PNG).convert("RGB"))
        aligned = aligned_from_dict(camera["aligned"], image)
        pivot = Pivot.load(directory / PIVOT_PT)
        base_G = load_base_generator(directory / TUNED_SAFETENSORS, base, device)
        G = load_generator(directory / TUNED_SAFETENSORS, device=base_G.device, base=base_G)
        G.checkpoint_path = G.checkpoint_format = None  # a tuned copy: not the base checkpoint file
        settings = dict(report.get("settings") or {})
        if report.get("photo") is not None:
            settings["photo"] = report["photo"]
        losses = report.get("losses") or {}
        tune_info = losses.get("tune") or {}
        history = [{"loss": l, "lpips": p} for l, p in zip(tune_info.get("loss", []), tune_info.get("lpips", []))]
        tuning = TuningResult(generator=G, pivot=pivot, settings=settings.get("tuning") or {}, history=history,
                              steps=int(tune_info.get("steps", len(history))),
                              stop_reason=tune_info.get("stop_reason", "completed"),
                              camera_correction=camera.get("camera_correction"), base=base_G)
        return cls(aligned=aligned, tuning=tuning, settings=settings, timings=dict(report.get("timings") or {}),
                   metrics=dict(report.get("metrics") or {}))

    def __repr__(self) -> str:
        yaw, pitch = _angles(self.camera)
        lp = self.metrics.get("lpips")
        return (f"InversionResult(source={self.aligned.source!r}, yaw={yaw:.1f}, pitch={pitch:.1f}, "
                f"space={self.pivot.space!r}, project_steps={self.pivot.steps}, tune_steps={self.tuning.steps}"
                + (f", lpips={lp:.4f}" if isinstance(lp, float) else "") + ")")


def load_base_generator(tuned: str | os.PathLike, base=None, device=None):
    """The base generator of a tuned delta file, kept so that the result can be saved again.

    ``base`` as for :func:`~eg3d_invert.pretrained.load_generator` (path, registry name or
    generator); None: the checkpoint the file records, found by path or in the cache and checked
    against its SHA-256.
    """
    from .pretrained import native
    from .pretrained.loading import resolve_delta_base, resolve_device

    if isinstance(base, (str, os.PathLike)) and not Path(base).is_file():
        from .pretrained import resolve_checkpoint

        base = resolve_checkpoint(str(base))  # a registry name or URL
    tuned = Path(tuned)
    header = native.read_header(tuned)
    if header is None or "base" not in header:
        raise CheckpointError(f"{tuned}: not a tuned (delta) generator file written by eg3d-invert")
    return resolve_delta_base(tuned, header["base"], base, resolve_device(device))


def _angles(label: torch.Tensor) -> tuple[float, float]:
    from .camera import label_angles

    yaw, pitch = label_angles(label.reshape(-1, 25)[:1])
    return round(float(yaw[0]), 3), round(float(pitch[0]), 3)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def aligned_from_dict(d: Mapping[str, Any], image: np.ndarray) -> AlignedFace:
    """:meth:`AlignedFace.from_dict`, with a malformed record reported as a bad ``camera.json``."""
    try:
        return AlignedFace.from_dict(d, image)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"camera.json: incomplete alignment record ({type(exc).__name__}: {exc})") from None


# --- the inverter --------------------------------------------------------------------------------------


class Inverter:
    """Photo -> :class:`InversionResult`: the generator, the aligner and the LPIPS models, built once.

    Construct it with :meth:`from_pretrained` (checkpoint by registry name or path), or directly
    from components you already have (diffusers-style)::

        inverter = Inverter(G, Aligner(threshold=0.8), projection=ProjectionSettings(space="w+"))

    Args:
        generator: the base :class:`~eg3d_invert.generator.TriPlaneGenerator` (left untouched:
            tuning works on a copy per photo).
        aligner: an :class:`~eg3d_invert.preprocessing.Aligner` (default: the official settings).
        projection, tuning: settings of the two stages (default: the ``'official'`` presets,
            i.e. EG3D-projector's 500 W steps and PTI's 350 steps).
        lpips: prebuilt LPIPS models by net name (``{'vgg': ..., 'alex': ...}``); the others are
            built (once per process, see :func:`shared_lpips`) now, so a missing weight file is
            reported before any photo is processed.
    Raises:
        ConfigError: a component of the wrong type.
        MissingWeightsError: an LPIPS backbone is missing and cannot be downloaded.
    """

    def __init__(self, generator, aligner: Aligner | None = None, *, projection: ProjectionSettings | None = None,
                 tuning: TuningSettings | None = None, lpips: Mapping[str, torch.nn.Module] | None = None):
        from .generator import TriPlaneGenerator

        if not isinstance(generator, TriPlaneGenerator):
            raise ConfigError(f"generator must be a TriPlaneGenerator, got {type(generator).__name__}")
        if aligner is not None and not isinstance(aligner, Aligner):
            raise ConfigError(f"aligner must be an Aligner, got {type(aligner).__name__}")
        self.projection, self.tuning = resolve_settings(projection=projection, tuning=tuning, seed=None)
        self.generator = generator.eval().requires_grad_(False)
        self.aligner = aligner if aligner is not None else Aligner(device=_aligner_device(generator.device))
        self.lpips: dict[str, torch.nn.Module] = dict(lpips or {})
        for net in {self.projection.lpips_net, self.tuning.lpips_net}:
            if net not in self.lpips:
                self.lpips[net] = shared_lpips(net, self.device)
        self._checkpoint: dict[str, Any] | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "ffhq512-128", device: str | torch.device = "auto", *,
                        preset: str = "official", projector: str | None = None, steps: int | None = None,
                        pti_steps: int | None = None, seed: int = 0, camera_refinement: bool = False,
                        projection_lpips: str | None = None, tuning_lpips: str | None = None,
                        threshold: float = 0.9, min_face_size: float | None = None, five_points: str = "detector",
                        padding: str = "black", max_pixels: int | None = DEFAULT_MAX_PIXELS,
                        projection: ProjectionSettings | None = None, tuning: TuningSettings | None = None,
                        aligner: Aligner | None = None, lpips: Mapping[str, torch.nn.Module] | None = None,
                        base=None) -> "Inverter":
        """Load a checkpoint (downloading a registry name into the cache on first use) and build
        everything an inversion needs, once.

        Args:
            name_or_path: a registry name (``eg3d-invert models`` lists them), a checkpoint
                file (``.pkl``, ``.safetensors``, ``.pth`` with ``base=``) or an http(s) URL.
            device: ``'auto'`` (CUDA, else MPS, else CPU), ``'cpu'``, ``'cuda:1'``, ...
            preset: ``'official'`` (EG3D-projector + PTI values) or another preset of
                :data:`~eg3d_invert.inversion.PROJECTION_PRESETS`.
            projector: ``'w'`` (one latent for all layers, the official default, better novel
                views) or ``'w+'`` (one per layer: closer to the photo, weaker 3D).
            steps, pti_steps: projection / tuning steps (default: the preset's, 500 / 350).
            seed: seeds every random draw, so results are reproducible.
            camera_refinement: also refine the estimated camera during both stages.
            projection_lpips, tuning_lpips: ``'vgg'`` or ``'alex'`` (default: the preset's,
                vgg / alex).
            threshold, min_face_size, five_points, padding, max_pixels: the
                :class:`~eg3d_invert.preprocessing.Aligner` settings (ignored if ``aligner`` is given).
            projection, tuning: full settings objects to start from instead of the preset.
            aligner, lpips: prebuilt components to use as they are.
            base: the base checkpoint of a weights-only ``.pth`` or tuned delta file.
        Raises:
            ConfigError: a bad argument (the message names it).
            CheckpointError, DownloadError, MissingWeightsError: the checkpoint or LPIPS weights.
        """
        from .pretrained import load_generator, resolve_device

        proj, tun = resolve_settings(preset=preset, projector=projector, steps=steps, pti_steps=pti_steps, seed=seed,
                                     camera_refinement=camera_refinement, projection_lpips=projection_lpips,
                                     tuning_lpips=tuning_lpips, projection=projection, tuning=tuning)
        if aligner is None:
            aligner = _build_aligner(threshold, min_face_size, five_points, padding, max_pixels,
                                     _aligner_device(resolve_device(device)))
        G = load_generator(name_or_path, device=device, base=base)
        return cls(G, aligner, projection=proj, tuning=tun, lpips=lpips)

    # --- properties ----------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.generator.device

    @property
    def checkpoint(self) -> dict[str, Any]:
        """The base checkpoint: path, SHA-256 (of the file; of the tensors if there is no file),
        registry name, format. Hashed once."""
        if self._checkpoint is None:
            self._checkpoint = checkpoint_info(self.generator)
        return self._checkpoint

    @property
    def config(self) -> dict[str, Any]:
        """Everything that decides a result, JSON-ready (what ``report.json`` records)."""
        backbones = {net: bool(getattr(m, "backbone_pretrained", True)) for net, m in sorted(self.lpips.items())}
        return {"checkpoint": self.checkpoint, "projection": self.projection.to_dict(),
                "tuning": self.tuning.to_dict(), "aligner": aligner_settings(self.aligner),
                "lpips_pretrained": backbones, "device": str(self.device)}

    def __repr__(self) -> str:
        return (f"Inverter(checkpoint={self.checkpoint.get('name') or self.checkpoint.get('path')!r}, "
                f"device={str(self.device)!r}, projector={self.projection.space!r}, "
                f"steps={self.projection.num_steps}, pti_steps={self.tuning.num_steps})")

    # --- the work ------------------------------------------------------------------------------

    def align(self, photo: ImageSource, face_index: int = 0, *, name: str | None = None) -> AlignedFace:
        """Only the first stage: the EG3D crop and camera label of one face of ``photo``."""
        return self.aligner.align(photo, face_index=face_index, name=name)

    def invert(self, photo: ImageSource | AlignedFace, face_index: int = 0, callback: Callback | None = None, *,
               name: str | None = None) -> InversionResult:
        """Align, project and tune: one photo to an :class:`InversionResult`.

        Args:
            photo: a path, encoded bytes, a PIL image or an RGB ``(H, W, 3)`` uint8 array (see
                :func:`~eg3d_invert.preprocessing.read_image`), or an already aligned face.
            face_index: which face, by size (0 = the largest, as the official pipeline).
            callback: called with a :class:`~eg3d_invert.inversion.Progress` when each stage
                starts (``step == 0``, loss NaN) and after every optimisation step
                (``stage`` ``'align'``, ``'project'``, ``'tune'``, ``'finalize'``); returning
                True during projection or tuning ends that stage early.
            name: how the photo is called in messages and the result (default: its path).
        Raises:
            ImageReadError, NoFaceError (and subclasses): the photo.
            NonFiniteLossError: an optimisation diverged.
            InterruptedRun: Ctrl-C during an optimisation (its ``partial`` holds the stage's result).
        """
        notify = callback or (lambda progress: None)
        timings: dict[str, float] = {}
        proj, tun = self.projection, self.tuning

        t0 = time.perf_counter()
        if isinstance(photo, AlignedFace):
            aligned = photo
        else:
            notify(Progress("align", 0, 1, math.nan, math.nan, 0.0))
            aligned = self.aligner.align(photo, face_index=face_index, name=name or source_name(photo))
        timings["align"] = time.perf_counter() - t0
        notify(Progress("align", 1, 1, math.nan, math.nan, 0.0, {"aligned": aligned}))

        t0 = time.perf_counter()
        notify(Progress("project", 0, proj.num_steps, math.nan, math.nan, 0.0))
        pivot = project(self.generator, aligned.image, aligned.label, settings=proj,
                        lpips_model=self.lpips[proj.lpips_net], callback=callback)
        timings["project"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        notify(Progress("tune", 0, tun.num_steps, math.nan, math.nan, 0.0))
        tuning = tune(self.generator, pivot, aligned.image, settings=tun, lpips_model=self.lpips[tun.lpips_net],
                      callback=callback)
        timings["tune"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        notify(Progress("finalize", 0, 1, math.nan, math.nan, 0.0))
        settings = {**self.config, "face_index": int(aligned.face_index)}
        if isinstance(photo, (str, os.PathLike)) and Path(photo).is_file():
            settings["photo"] = {"path": str(Path(photo).resolve()), "sha256": _file_sha256(photo)}
        result = InversionResult(aligned=aligned, tuning=tuning, settings=settings, timings=timings)
        object.__setattr__(result, "metrics", self._metrics(result, aligned))
        timings["finalize"] = time.perf_counter() - t0
        notify(Progress("finalize", 1, 1, math.nan, math.nan, 0.0))
        return result

    def _metrics(self, result: InversionResult, aligned: AlignedFace) -> dict[str, Any]:
        """LPIPS (the tuning's net) and PSNR between the photo and its deterministic render."""
        G = self.generator
        net = self.tuning.lpips_net
        target = prepare_image(aligned.image, G.img_resolution, self.device)
        image = result._render_input_view(None, self.tuning.sample_mult)
        with torch.no_grad():
            lp = float(PerceptualDistance(self.lpips[net], target)(image).sum())
        return {"lpips": round(lp, 6), "lpips_net": net,
                "lpips_pretrained": bool(getattr(self.lpips[net], "backbone_pretrained", True)),
                "psnr_db": None if (p := _psnr(image, target)) is None else round(p, 4),
                "resolution": int(G.img_resolution), "sample_mult": float(self.tuning.sample_mult)}


def _aligner_device(device: torch.device) -> str:
    # MTCNN (facenet-pytorch) is only known to work on CPU and CUDA.
    return "cuda" if torch.device(device).type == "cuda" else "cpu"


def _build_aligner(threshold, min_face_size, five_points, padding, max_pixels, device) -> Aligner:
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 < threshold < 1:
        raise ConfigError(f"threshold must be a number in (0, 1), got {threshold!r}")
    if min_face_size is not None and (not isinstance(min_face_size, (int, float)) or isinstance(min_face_size, bool)
                                      or min_face_size < 1):
        raise ConfigError(f"min_face_size must be a number of pixels >= 1 or None, got {min_face_size!r}")
    if five_points not in ("detector", "mesh", "dlib"):
        raise ConfigError(f"five_points must be 'detector', 'mesh' or 'dlib', got {five_points!r}")
    if padding not in ("black", "reflect"):
        raise ConfigError(f"padding must be 'black' or 'reflect', got {padding!r}")
    if max_pixels is not None and not (_is_int(max_pixels) and max_pixels > 0):
        raise ConfigError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
    return Aligner(threshold=float(threshold), min_face_size=min_face_size, five_points=five_points, padding=padding,
                   max_pixels=max_pixels, device=device)


def _file_sha256(path) -> str:
    from .pretrained import file_sha256

    return file_sha256(path)


__all__ = ["Inverter", "InversionResult", "resolve_settings", "load_base_generator", "shared_lpips", "aligned_from_dict",
           "package_versions", "checkpoint_info", "aligner_settings", "RENDER_SAMPLE_MULT"]
