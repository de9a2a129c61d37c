"""The renders of a result folder: views, depth maps, the orbit video and the mesh.

:func:`write_renders` writes, into a folder laid out as :mod:`eg3d_invert.result_folder`
describes:

* ``views/yaw+015_pitch+000.png`` ... one PNG per view, and the captioned grid ``views.png``;
* ``depth/yaw+015_pitch+000.png`` (colour map, nearer brighter), ``.npy`` (raw depth, float32,
  distance along the ray in world units) and ``_opacity.npy``, from the views' own renders;
* ``orbit.mp4`` (the official ``gen_videos.py`` orbit);
* ``mesh.ply`` / ``mesh.obj`` / ``mesh.glb`` (vertex colours, world units).

What to render is a :class:`~eg3d_invert.options.RenderOptions`. Each file is written
atomically; the report that lists them is the caller's to write last
(:func:`~eg3d_invert.result_folder.finish_report`).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import EmptyMeshError
from .inversion.identity import identity_scores
from .options import RenderOptions, parse_views
from .render.depth import DepthMaps
from .render.mesh import save_mesh
from .render.views import save_png
from .result import InversionResult
from .result_folder import DEPTH_DIR, VIDEO_FILE, VIEWS_DIR, VIEWS_GRID

#: ``progress(stage, done, total)``: render stages are ``views``, ``depth``, ``video``, ``mesh``.
RenderProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Renders:
    """What :func:`write_renders` wrote.

    Attributes:
        files: ``{path relative to the folder: size in bytes}``.
        timings: ``{stage: seconds}`` of the stages that ran.
        warnings: one line per output that was skipped (e.g. a mesh level the density never
            reaches); the other outputs are complete.
        identity: ``{view file: score}``, the face-recognition similarity of the photo's crop
            and each view (:func:`~eg3d_invert.inversion.identity.identity_scores`).
    """

    files: dict[str, int]
    timings: dict[str, float]
    warnings: tuple[str, ...] = ()
    identity: dict[str, dict] = field(default_factory=dict)


def write_renders(result: InversionResult, directory: str | os.PathLike, options: RenderOptions,
                  progress: RenderProgress | None = None) -> Renders:
    """Render views, depth, video and mesh of ``result`` into ``directory`` (atomically, file by file).

    A mesh level the density never reaches skips the mesh with a warning naming the density's
    range (the views, depth and video are written, so the result is usable); any other failure
    raises.
    """
    directory = Path(directory)
    written: list[Path] = []
    identity: dict[str, dict] = {}
    timings: dict[str, float] = {}
    warnings: list[str] = []

    @contextlib.contextmanager
    def stage(name: str, total: int):
        """Announce ``name`` at 0/``total``, yield its progress callback, then record its time
        (only if it finished: a failed stage leaves no timing)."""
        t0 = time.perf_counter()
        if progress is None:
            yield None
        else:
            progress(name, 0, total)
            yield lambda done, count: progress(name, done, count)
        timings[name] = time.perf_counter() - t0

    if options.yaws:
        with stage("views", len(options.yaws)) as report:
            views = result.view_set(options.yaws, options.pitches, sample_mult=options.sample_mult, progress=report)
            saved = views.save(directory / VIEWS_DIR, grid_name=None)
            written += saved
            written.append(save_png(views.grid(), directory / VIEWS_GRID))
            identity = identity_scores(result.aligned.image,
                                       {p.relative_to(directory).as_posix(): np.asarray(img)
                                        for p, img in zip(saved, views.images)})
        if options.depth:
            with stage("depth", len(options.yaws)):  # the views' renders carried the depth maps
                written += DepthMaps.from_views(views).save(directory / DEPTH_DIR)
    if options.video:
        with stage("video", options.frames) as report:
            info = result.video(directory / VIDEO_FILE, frames=options.frames, fps=options.fps,
                                sample_mult=options.sample_mult, progress=report)
            written.append(info.path)
    if options.mesh_formats:
        with stage("mesh", 1) as report:
            try:
                mesh = result.mesh(options.mesh_resolution, options.mesh_level, progress=report)
            except EmptyMeshError as exc:
                warnings.append(f"mesh skipped: {exc}")
            else:
                for fmt in options.mesh_formats:
                    written.append(save_mesh(mesh, directory / f"mesh.{fmt}"))
    files = {p.relative_to(directory).as_posix(): p.stat().st_size for p in written}
    return Renders(files, timings, tuple(warnings), identity)


__all__ = ["write_renders", "Renders", "RenderProgress", "RenderOptions", "parse_views"]
