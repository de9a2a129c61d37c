"""The result folder of one photo: its file names, saving and loading it, and ``report.json``.

A folder ``DIR/NAME/`` holds the inversion, written by :func:`save_result`:

* ``aligned.png`` (the 512x512 crop), ``camera.json`` (the label used, the aligner's estimate
  and the whole alignment record), ``reconstruction.png`` (input | render from the photo's
  camera);
* ``pivot.pt`` (ws, camera, optimised noise, history; loads with ``weights_only=True``) and
  ``pivot.npy`` (EG3D-projector's ws array ``[1, num_ws, w_dim]`` float32, what its
  ``gen_videos_from_given_latent_code.py --npy_path`` reads);
* ``tuned.safetensors``: only the tensors tuning changed, plus the base checkpoint's SHA-256;

plus the renders of :func:`eg3d_invert.outputs.write_renders` (``views/``, ``views.png``,
``depth/``, ``orbit.mp4``, ``mesh.*``) and ``report.json``.

**Completeness.** Every file is written atomically (temporary name, then rename), and
``report.json`` (one writer: :func:`write_report`) is rewritten *last*, listing every file of
the folder with its size in bytes and the render options the renders were made with. A folder
is complete when its report lists the render options asked for now and every listed file exists
with its listed size; an interrupted run (Ctrl-C, kill, power loss) therefore never passes for
a finished one. Before a folder is changed, its report is first reduced to what will stay
valid (:func:`mark_renders_pending`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import PIL.Image
import torch

from ._io import write_json_atomic
from .camera import label_angles
from .errors import CheckpointError
from .preprocessing import AlignedFace
from .render.views import save_png

if TYPE_CHECKING:
    from .options import RenderOptions
    from .result import InversionResult

ALIGNED_PNG = "aligned.png"
CAMERA_JSON = "camera.json"
PIVOT_PT = "pivot.pt"
PIVOT_NPY = "pivot.npy"
TUNED_SAFETENSORS = "tuned.safetensors"
RECONSTRUCTION_PNG = "reconstruction.png"
REPORT_JSON = "report.json"
VIEWS_DIR, VIEWS_GRID, DEPTH_DIR, VIDEO_FILE = "views", "views.png", "depth", "orbit.mp4"
RESULT_FORMAT = "eg3d-invert/result"
RESULT_VERSION = 1

#: Files of the inversion itself, written by :func:`save_result` (renders are the others).
INVERSION_FILES = (ALIGNED_PNG, CAMERA_JSON, PIVOT_PT, PIVOT_NPY, TUNED_SAFETENSORS, RECONSTRUCTION_PNG)
#: Those a folder must list to count as inverted (folders of earlier versions have no pivot.npy).
REQUIRED_FILES = (ALIGNED_PNG, CAMERA_JSON, PIVOT_PT, TUNED_SAFETENSORS, RECONSTRUCTION_PNG)
#: Stages whose timings belong to the inversion (the render stages' are replaced on re-render).
INVERSION_STAGES = ("align", "project", "tune", "finalize")


# --- documents -------------------------------------------------------------------------------------


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages that determine a result (for reports and summaries)."""
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


def _angles(label: torch.Tensor) -> tuple[float, float]:
    yaw, pitch = label_angles(label.reshape(-1, 25)[:1])
    return round(float(yaw[0]), 3), round(float(pitch[0]), 3)


def _stage_summary(history: list[dict[str, float]], steps: int, stop_reason: str) -> dict[str, Any]:
    """Final numbers and the per-step loss curve of one optimisation stage."""
    last = history[-1] if history else {}
    return {"steps": int(steps), "stop_reason": stop_reason, "final_loss": last.get("loss"),
            "final_lpips": last.get("lpips"),
            "loss": [round(float(h["loss"]), 6) for h in history],
            "lpips": [round(float(h["lpips"]), 6) for h in history if "lpips" in h]}


def report_document(result: "InversionResult") -> dict[str, Any]:
    """``report.json`` of a result before renders: settings, versions, camera, timings, losses, metrics."""
    yaw, pitch = _angles(result.camera)
    aligned = result.aligned
    return {
        "format": RESULT_FORMAT, "version": RESULT_VERSION,
        "source": aligned.source,
        "photo": result.settings.get("photo"),
        "settings": {k: v for k, v in result.settings.items() if k != "photo"},
        "versions": package_versions(),
        "camera": {"yaw_deg": yaw, "pitch_deg": pitch, "estimate_yaw_deg": round(aligned.yaw, 3),
                   "estimate_pitch_deg": round(aligned.pitch, 3), "roll_deg": round(aligned.roll, 3),
                   "pose_warnings": list(aligned.pose_warnings)},
        "faces": {"found": int(aligned.num_faces), "used": int(aligned.face_index)},
        "timings": {k: round(float(v), 4) for k, v in result.timings.items()},
        "losses": {
            "project": _stage_summary(result.pivot.history, result.pivot.steps, result.pivot.stop_reason),
            "tune": _stage_summary(result.tuning.history, result.tuning.steps, result.tuning.stop_reason),
        },
        "metrics": result.metrics,
    }


def camera_document(result: "InversionResult") -> dict[str, Any]:
    """``camera.json``: the label used to render the photo (EG3D's 25 numbers), the aligner's
    estimate and the full alignment record."""
    yaw, pitch = _angles(result.camera)
    est = result.pivot.camera_estimate
    return {
        "convention": "EG3D label: OpenCV cam2world 4x4 row-major, then normalised intrinsics 3x3 row-major; "
                      "world +y up, face toward +z; angles geometric degrees (yaw toward the subject's left, "
                      "pitch camera above)",
        "label": [float(v) for v in result.camera.reshape(-1)],
        "label_estimate": [float(v) for v in (est if est is not None else result.aligned.label).reshape(-1)],
        "yaw_deg": yaw, "pitch_deg": pitch,
        "pose_warnings": list(result.aligned.pose_warnings),
        "camera_correction": result.tuning.camera_correction or result.pivot.camera_correction,
        "image": ALIGNED_PNG,
        "aligned": result.aligned.to_dict(),
    }


# --- save and load -----------------------------------------------------------------------------------


def save_result(result: "InversionResult", directory: str | os.PathLike) -> dict[str, int]:
    """Write the inversion into ``directory`` (created if needed), every file atomically, the
    report last. Returns ``{file name: size in bytes}`` as listed in the report."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    result.aligned.save(directory / ALIGNED_PNG)
    write_json_atomic(directory / CAMERA_JSON, camera_document(result))
    result.pivot.save(directory / PIVOT_PT)
    result.pivot.save(directory / PIVOT_NPY)
    result.tuning.save_generator(directory / TUNED_SAFETENSORS, base_info=result.settings.get("checkpoint"))
    save_png(result.side_by_side(), directory / RECONSTRUCTION_PNG)
    files = {name: (directory / name).stat().st_size for name in INVERSION_FILES}
    write_report(directory, {**report_document(result), "files": files})
    return files


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


def load_result(directory: str | os.PathLike, base=None, device: str | torch.device | None = None
                ) -> "InversionResult":
    """Read a folder written by :func:`save_result` (or by the ``eg3d-invert`` command).

    Args:
        base: the base checkpoint of ``tuned.safetensors`` (path, registry name or a loaded
            generator); default: the file the result records, if it is still there with the
            same SHA-256.
        device: where to put the generator (default CPU; ``'auto'`` the best available).
    Raises:
        CheckpointError: a file is missing or unreadable, or the base cannot be found.
    """
    from .inversion import Pivot, TuningResult
    from .pretrained import load_base_generator, load_generator
    from .result import InversionResult

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
    return InversionResult(aligned=aligned, tuning=tuning, settings=settings,
                           timings=dict(report.get("timings") or {}), metrics=dict(report.get("metrics") or {}))


# --- report.json and completeness -------------------------------------------------------------------


def read_report(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's ``report.json`` if it is a readable eg3d-invert result report, else None."""
    path = Path(directory) / REPORT_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == RESULT_FORMAT else None


def write_report(directory: str | os.PathLike, report: Mapping[str, Any]) -> None:
    """Write ``report.json`` atomically: the only writer of the file, called last by every step
    that changes a folder."""
    write_json_atomic(Path(directory) / REPORT_JSON, dict(report))


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


def folder_status(directory: str | os.PathLike, key: Mapping[str, Any] | None, options: "RenderOptions") -> str:
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
    inversion = {k: v for k, v in files.items() if k in INVERSION_FILES}
    if any(name not in files for name in REQUIRED_FILES) or not _files_intact(directory, inversion):
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
    report["files"] = {k: v for k, v in files.items() if k in INVERSION_FILES}
    report["render"] = None
    report["previous_files"] = sorted(set(files) | set(report.get("previous_files") or []) | set(previous))
    write_report(directory, report)


def finish_report(directory: str | os.PathLike, options: "RenderOptions", render_files: Mapping[str, int],
                  render_timings: Mapping[str, float], warnings: Iterable[str] = (),
                  identity: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Add the renders (and the ``warnings`` about outputs they skipped, and the views'
    ``identity`` scores, under ``metrics.identity.views``) to the report and write it, last; then delete files that an earlier run wrote here and this one did not (views at
    other angles, another mesh format, ...).

    Only files a previous report listed are ever deleted. Returns the final report.
    """
    directory = Path(directory)
    report = read_report(directory)
    if report is None:
        raise CheckpointError(f"{directory / REPORT_JSON}: the inversion's report is missing")
    old = set(report.pop("previous_files", None) or [])
    files = {k: v for k, v in (report.get("files") or {}).items() if k in INVERSION_FILES}
    files.update(render_files)
    report["files"] = files
    report["render"] = options.to_dict()
    timings = {k: v for k, v in (report.get("timings") or {}).items() if k in INVERSION_STAGES}
    timings.update({k: round(float(v), 4) for k, v in render_timings.items()})
    report["timings"] = timings
    report["warnings"] = list(warnings)
    metrics = report.setdefault("metrics", {})
    ident = metrics.get("identity")
    if isinstance(ident, dict):
        ident.pop("views", None)  # the views' scores belong to this render
        if identity:
            ident["views"] = {k: dict(v) for k, v in identity.items()}
    write_report(directory, report)
    for rel in sorted(old - set(files) - {REPORT_JSON}):
        target = directory / rel
        if target.is_file() and directory.resolve() in target.resolve().parents:
            target.unlink()
    for sub in (VIEWS_DIR, DEPTH_DIR):
        with contextlib.suppress(OSError):
            (directory / sub).rmdir()  # only if it ended up empty
    return report


__all__ = ["save_result", "load_result", "report_document", "camera_document", "read_report", "write_report",
           "folder_status", "inversion_key", "report_key", "mark_renders_pending", "finish_report",
           "aligned_from_dict", "package_versions", "INVERSION_FILES", "REQUIRED_FILES", "ALIGNED_PNG",
           "CAMERA_JSON", "PIVOT_PT", "PIVOT_NPY", "TUNED_SAFETENSORS", "RECONSTRUCTION_PNG", "REPORT_JSON",
           "VIEWS_DIR", "VIEWS_GRID", "DEPTH_DIR", "VIDEO_FILE", "RESULT_FORMAT", "RESULT_VERSION"]
