"""The per-photo result folder of ``eg3d-invert``: what is rendered into it, and when it is complete.

A folder ``DIR/NAME/`` holds what :meth:`InversionResult.save <eg3d_invert.api.InversionResult.save>`
writes (``aligned.png``, ``camera.json``, ``pivot.pt``, ``tuned.safetensors``,
``reconstruction.png``, ``report.json``) plus the renders of :func:`write_renders`:

* ``views/yaw+015_pitch+000.png`` ... one PNG per view, and the captioned grid ``views.png``;
* ``depth/yaw+015_pitch+000.png`` (colour map, nearer brighter), ``.npy`` (raw depth, float32,
  distance along the ray in world units) and ``_opacity.npy``;
* ``orbit.mp4`` (the official ``gen_videos.py`` orbit);
* ``mesh.ply`` / ``mesh.obj`` / ``mesh.glb`` (vertex colours, world units).

**Completeness.** Every file is written atomically (temporary name, then rename), and
``report.json`` is rewritten *last*, listing every file of the folder with its size in bytes
and the :class:`RenderOptions` the renders were made with. A folder is complete when its report
lists the render options asked for now and every listed file exists with its listed size; an
interrupted run (Ctrl-C, kill, power loss) therefore never passes for a finished one. Before a
folder is changed, its report is first reduced to what will stay valid (see
:func:`mark_renders_pending`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ._io import write_json_atomic
from .api import (ALIGNED_PNG, CAMERA_JSON, PIVOT_PT, RECONSTRUCTION_PNG, RENDER_SAMPLE_MULT, REPORT_JSON,
                  RESULT_FORMAT, TUNED_SAFETENSORS, InversionResult)
from .errors import ConfigError
from .render.depth import DepthMaps
from .render.mesh import DEFAULT_LEVEL, MESH_FORMATS, save_mesh
from .render.video import DEFAULT_FPS, DEFAULT_FRAMES
from .render.views import DEFAULT_YAWS, save_png

#: Files of the inversion itself (written by ``InversionResult.save``).
CORE_FILES = (ALIGNED_PNG, CAMERA_JSON, PIVOT_PT, TUNED_SAFETENSORS, RECONSTRUCTION_PNG)
VIEWS_DIR, VIEWS_GRID, DEPTH_DIR, VIDEO_FILE = "views", "views.png", "depth", "orbit.mp4"

#: ``progress(stage, done, total)``: render stages are ``views``, ``depth``, ``video``, ``mesh``.
RenderProgress = Callable[[str, int, int], None]


def parse_views(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``'-30,0,30:10'`` -> yaws ``(-30, 0, 30)``, pitches ``(0, 0, 10)``; ``'none'`` -> no views.

    Each comma-separated item is ``YAW`` or ``YAW:PITCH`` in geometric degrees (yaw toward the
    subject's left, pitch with the camera above).
    """
    text = text.strip()
    if text.lower() in ("", "none"):
        return (), ()
    yaws, pitches = [], []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            if len(parts) > 2:
                raise ValueError
            yaw = float(parts[0])
            pitch = float(parts[1]) if len(parts) == 2 else 0.0
        except ValueError:
            raise ConfigError(f"views: {item.strip()!r} is not YAW or YAW:PITCH in degrees "
                              f"(e.g. --views=-30,0,30:10)") from None
        if not (math.isfinite(yaw) and math.isfinite(pitch)) or abs(pitch) >= 90:
            raise ConfigError(f"views: {item.strip()!r}: angles must be finite and pitch within (-90, 90)")
        yaws.append(yaw)
        pitches.append(pitch)
    return tuple(yaws), tuple(pitches)


def format_views(yaws, pitches) -> str:
    """Inverse of :func:`parse_views`."""
    if not yaws:
        return "none"
    return ",".join(f"{y:g}" if p == 0 else f"{y:g}:{p:g}" for y, p in zip(yaws, pitches))


@dataclass(frozen=True)
class RenderOptions:
    """What is rendered into a result folder.

    Attributes:
        yaws, pitches: the views, geometric degrees, same length (empty: no views, no depth).
        depth: also write the depth maps of the views.
        video: write ``orbit.mp4`` with ``frames`` frames at ``fps``.
        mesh_formats: mesh files to write (``'ply'``, ``'obj'``, ``'glb'``); empty: no mesh.
        mesh_resolution: lattice points per axis of the marching cubes.
        mesh_level: iso-level of the raw density (official 10).
        sample_mult: depth-sample multiplier of views, depth and video (official videos: 2).
    """

    yaws: tuple[float, ...] = DEFAULT_YAWS
    pitches: tuple[float, ...] = (0.0,) * len(DEFAULT_YAWS)
    depth: bool = True
    video: bool = True
    frames: int = DEFAULT_FRAMES
    fps: float = float(DEFAULT_FPS)
    mesh_formats: tuple[str, ...] = ("ply",)
    mesh_resolution: int = 256
    mesh_level: float = DEFAULT_LEVEL
    sample_mult: float = RENDER_SAMPLE_MULT

    def __post_init__(self):
        object.__setattr__(self, "yaws", tuple(float(v) for v in self.yaws))
        object.__setattr__(self, "pitches", tuple(float(v) for v in self.pitches))
        object.__setattr__(self, "mesh_formats", tuple(dict.fromkeys(str(f).lower() for f in self.mesh_formats)))
        if len(self.yaws) != len(self.pitches):
            raise ConfigError(f"views: {len(self.yaws)} yaws but {len(self.pitches)} pitches")
        if any(abs(p) >= 90 for p in self.pitches):
            raise ConfigError(f"views: pitch must be within (-90, 90) degrees, got {list(self.pitches)}")
        for name in ("frames", "mesh_resolution"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        if self.mesh_resolution < 8:
            raise ConfigError(f"mesh_resolution must be at least 8, got {self.mesh_resolution}")
        for name in ("fps", "sample_mult"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"{name} must be a positive number, got {v!r}")
        if not math.isfinite(self.mesh_level):
            raise ConfigError(f"mesh_level must be finite, got {self.mesh_level!r}")
        bad = [f for f in self.mesh_formats if f not in MESH_FORMATS]
        if bad:
            raise ConfigError(f"mesh format {bad[0]!r} unknown; use {', '.join(MESH_FORMATS)} or none")

    def to_dict(self) -> dict[str, Any]:
        return {"yaws": list(self.yaws), "pitches": list(self.pitches), "depth": self.depth, "video": self.video,
                "frames": self.frames, "fps": float(self.fps), "mesh_formats": list(self.mesh_formats),
                "mesh_resolution": self.mesh_resolution, "mesh_level": float(self.mesh_level),
                "sample_mult": float(self.sample_mult)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RenderOptions":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def write_renders(result: InversionResult, directory: str | os.PathLike, options: RenderOptions,
                  progress: RenderProgress | None = None) -> tuple[dict[str, int], dict[str, float]]:
    """Render views, depth, video and mesh of ``result`` into ``directory`` (atomically, file by file).

    Returns ``({path relative to directory: size in bytes}, {stage: seconds})``.
    Raises:
        EmptyMeshError: the density never reaches ``options.mesh_level`` (the files rendered
            before the mesh stay).
    """
    directory = Path(directory)
    written: list[Path] = []
    timings: dict[str, float] = {}

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
            written += views.save(directory / VIEWS_DIR, grid_name=None)
            written.append(save_png(views.grid(), directory / VIEWS_GRID))
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
            mesh = result.mesh(options.mesh_resolution, options.mesh_level, progress=report)
            for fmt in options.mesh_formats:
                written.append(save_mesh(mesh, directory / f"mesh.{fmt}"))
    files = {p.relative_to(directory).as_posix(): p.stat().st_size for p in written}
    return files, timings


# --- report.json and completeness ------------------------------------------------------------------


def read_report(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's ``report.json`` if it is a readable eg3d-invert result report, else None."""
    path = Path(directory) / REPORT_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == RESULT_FORMAT else None


def _json_normal(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples -> lists, ints stay ints), for comparisons."""
    return json.loads(json.dumps(obj, sort_keys=True))


def inversion_key(config: Mapping[str, Any], face_index: int, photo_sha256: str | None) -> dict[str, Any]:
    """What must match for an inversion on disk to count as this one: the photo's SHA-256, the
    checkpoint's, the projection, tuning and aligner settings and the face index.

    ``config`` is :attr:`Inverter.config <eg3d_invert.api.Inverter.config>` or a report's ``settings``.
    """
    return _json_normal({"photo_sha256": photo_sha256, "checkpoint_sha256": (config.get("checkpoint") or {}).get("sha256"),
                         "projection": config.get("projection"), "tuning": config.get("tuning"),
                         "aligner": config.get("aligner"), "face_index": int(face_index)})


def report_key(report: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`inversion_key` of a result already on disk."""
    settings = report.get("settings") or {}
    return inversion_key(settings, settings.get("face_index", -1), (report.get("photo") or {}).get("sha256"))


def _files_intact(directory: Path, files: Mapping[str, int]) -> bool:
    for rel, size in files.items():
        try:
            if (directory / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def folder_status(directory: str | os.PathLike, key: Mapping[str, Any] | None, options: RenderOptions) -> str:
    """How much of the work for ``key`` (see :func:`inversion_key`) and ``options`` is on disk:

    * ``'complete'``: the inversion matches and every render asked for is listed and intact;
    * ``'inverted'``: the inversion matches and its files are intact; renders are missing,
      damaged or were made with other options;
    * ``'stale'``: a result of another photo or other settings (or damaged inversion files);
    * ``'missing'``: no readable report.
    """
    directory = Path(directory)
    report = read_report(directory)
    if report is None:
        return "missing"
    if key is None or report_key(report) != _json_normal(key):
        return "stale"
    files = report.get("files") or {}
    if any(name not in files for name in CORE_FILES) or not _files_intact(directory, {k: files[k] for k in CORE_FILES}):
        return "stale"
    if report.get("render") != _json_normal(options.to_dict()) or not _files_intact(directory, files):
        return "inverted"
    return "complete"


def mark_renders_pending(directory: str | os.PathLike, previous: Iterable[str] = ()) -> None:
    """Rewrite the report so that it lists only the inversion's files and no render options.

    Called before renders are (re)written: if the run stops half-way, the folder then reads as
    ``'inverted'`` rather than as complete with a mix of old and new renders. The files the
    report listed (and ``previous``, those of a result this one replaced) are remembered, so that
    :func:`finish_report` can delete the ones that are not rewritten.
    """
    directory = Path(directory)
    report = read_report(directory)
    if report is None:
        return
    files = report.get("files") or {}
    report["files"] = {k: v for k, v in files.items() if k in CORE_FILES}
    report["render"] = None
    report["previous_files"] = sorted(set(files) | set(report.get("previous_files") or []) | set(previous))
    write_json_atomic(directory / REPORT_JSON, report)


def finish_report(directory: str | os.PathLike, options: RenderOptions, render_files: Mapping[str, int],
                  render_timings: Mapping[str, float], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Add the renders to the report and write it, last; then delete files that an earlier run
    wrote here and this one did not (views at other angles, another mesh format, ...).

    Only files a previous report listed are ever deleted. Returns the final report.
    """
    directory = Path(directory)
    report = read_report(directory)
    if report is None:
        raise FileNotFoundError(f"{directory / REPORT_JSON}: the inversion's report is missing")
    old = set(report.pop("previous_files", None) or [])
    files = {k: v for k, v in (report.get("files") or {}).items() if k in CORE_FILES}
    files.update(render_files)
    report["files"] = files
    report["render"] = options.to_dict()
    timings = {k: v for k, v in (report.get("timings") or {}).items() if k in ("align", "project", "tune", "finalize")}
    timings.update({k: round(float(v), 4) for k, v in render_timings.items()})
    report["timings"] = timings
    if extra:
        report.update(extra)
    write_json_atomic(directory / REPORT_JSON, report)
    for rel in sorted(old - set(files) - {REPORT_JSON}):
        target = directory / rel
        if target.is_file() and directory.resolve() in target.resolve().parents:
            target.unlink()
    for sub in (VIEWS_DIR, DEPTH_DIR):
        with contextlib.suppress(OSError):
            (directory / sub).rmdir()  # only if it ended up empty
    return report


__all__ = ["RenderOptions", "parse_views", "format_views", "write_renders", "read_report", "folder_status",
           "inversion_key", "report_key", "mark_renders_pending", "finish_report", "CORE_FILES"]
