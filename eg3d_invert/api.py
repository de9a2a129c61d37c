"""The Python API for apps: :class:`Inverter` loads once and inverts many photos.

::

    from eg3d_invert import Inverter

    inverter = Inverter.from_pretrained("ffhq512-128")      # generator, aligner, LPIPS: built once
    result = inverter.invert("portrait.jpg")                 # align -> project (W) -> tune (PTI)
    result.render(yaw=30).save("left.png")                   # see eg3d_invert.result

An inversion returns an :class:`~eg3d_invert.result.InversionResult`; its folder format is
:mod:`eg3d_invert.result_folder`, the settings are :mod:`eg3d_invert.inversion.settings`.

**Determinism**: every random draw of :meth:`Inverter.invert` is seeded (``seed=``), so the same
photo, settings and device give the same result.
"""

from __future__ import annotations

import math
import numbers
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .devices import reuse_freed_memory
from .errors import ConfigError
from .inversion import (PerceptualDistance, Progress, ProjectionSettings, TuningSettings, prepare_image, project,
                        tune)
from .inversion.identity import NETWORK as IDENTITY_NETWORK, identity_scores
from .inversion.losses import shared_lpips
from .inversion.settings import DEFAULT_PRESET, resolve_settings
from .preprocessing import AlignedFace, Aligner
from .preprocessing.detection import DEFAULT_THRESHOLD
from .preprocessing.reading import DEFAULT_MAX_PIXELS, ImageSource, source_name
from .pretrained import checkpoint_record, file_sha256
from .pretrained.registry import DEFAULT_MODEL
from .render.views import tensor_to_pil
from .result import InversionResult

#: Progress callback of :meth:`Inverter.invert`: receives :class:`~eg3d_invert.inversion.Progress`
#: objects; returning True during projection or tuning stops that stage early.
Callback = Callable[[Progress], Any]


def aligner_settings(aligner: Aligner) -> dict[str, Any]:
    """The settings of an :class:`Aligner` that change its crops and labels (for reports)."""
    return {"threshold": float(aligner.detector.threshold), "min_face_size": aligner.detector.min_face_size,
            "five_points": aligner.five_points, "padding": aligner.padding, "max_pixels": aligner.max_pixels,
            "mirror_average": bool(aligner.detector.mirror_average)}


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
            built (once per process, see :func:`~eg3d_invert.inversion.losses.shared_lpips`) now, so
            a missing weight file is
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
        if self.generator.device.type == "cpu":
            reuse_freed_memory()  # a third of a CPU tuning step was page faults (devices.py)
        self.aligner = aligner if aligner is not None else Aligner(device=_aligner_device(generator.device))
        self.lpips: dict[str, torch.nn.Module] = dict(lpips or {})
        for net in {self.projection.lpips_net, self.tuning.lpips_net}:
            if net not in self.lpips:
                self.lpips[net] = shared_lpips(net, self.device)
        self._checkpoint: dict[str, Any] | None = None
        #: The arguments of :meth:`from_pretrained` that built this Inverter (None when it was built
        #: from components): what another process needs to build the same one (the Ray engine's
        #: workers, :mod:`eg3d_invert.ray_batch`).
        self.recipe: dict[str, Any] | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_MODEL, device: str | torch.device = "auto", *,
                        preset: str = DEFAULT_PRESET, projector: str | None = None, steps: int | None = None,
                        pti_steps: int | None = None, seed: int = 0, camera_refinement: bool = False,
                        projection_lpips: str | None = None, tuning_lpips: str | None = None,
                        threshold: float = DEFAULT_THRESHOLD, min_face_size: float | None = None,
                        five_points: str = "detector",
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
        recipe = {k: v for k, v in locals().items() if k != "cls"}  # first line: only the arguments
        from .devices import resolve_device
        from .pretrained import load_generator

        proj, tun = resolve_settings(preset=preset, projector=projector, steps=steps, pti_steps=pti_steps, seed=seed,
                                     camera_refinement=camera_refinement, projection_lpips=projection_lpips,
                                     tuning_lpips=tuning_lpips, projection=projection, tuning=tuning)
        if aligner is None:
            aligner = _build_aligner(threshold, min_face_size, five_points, padding, max_pixels,
                                     _aligner_device(resolve_device(device)))
        G = load_generator(name_or_path, device=device, base=base)
        inverter = cls(G, aligner, projection=proj, tuning=tun, lpips=lpips)
        inverter.recipe = recipe
        return inverter

    # --- properties ----------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.generator.device

    @property
    def checkpoint(self) -> dict[str, Any]:
        """The base checkpoint: path, SHA-256 (of the file; of the tensors if there is no file),
        registry name, format. Hashed once."""
        if self._checkpoint is None:
            self._checkpoint = checkpoint_record(self.generator)
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
            settings["photo"] = {"path": str(Path(photo).resolve()), "sha256": file_sha256(photo)}
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
        image = result.input_view(sample_mult=self.tuning.sample_mult)
        with torch.no_grad():
            lp = float(PerceptualDistance(self.lpips[net], target)(image).sum())
        # The "ID" papers report: the face-recognition similarity of the photo's crop and its render.
        render = np.asarray(tensor_to_pil(image)[0])
        ident = identity_scores(aligned.image, {"reconstruction": render})
        return {"lpips": round(lp, 6), "lpips_net": net,
                "lpips_pretrained": bool(getattr(self.lpips[net], "backbone_pretrained", True)),
                "psnr_db": None if (p := _psnr(image, target)) is None else round(p, 4),
                "resolution": int(G.img_resolution), "sample_mult": float(self.tuning.sample_mult),
                "identity": {"network": IDENTITY_NETWORK, "reconstruction": ident["reconstruction"]}}


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
    if max_pixels is not None and not (isinstance(max_pixels, numbers.Integral) and not isinstance(max_pixels, bool)
                                       and max_pixels > 0):
        raise ConfigError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
    return Aligner(threshold=float(threshold), min_face_size=min_face_size, five_points=five_points, padding=padding,
                   max_pixels=max_pixels, device=device)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """PSNR (dB) of images in [-1, 1] (range 2); None when they are identical."""
    mse = float(((a.clamp(-1, 1) - b.clamp(-1, 1)) ** 2).mean())
    return None if mse == 0 else 10.0 * math.log10(4.0 / mse)


__all__ = ["Inverter", "InversionResult", "aligner_settings", "Callback"]
