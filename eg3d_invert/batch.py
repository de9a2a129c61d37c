"""Many photos (or saved results) into one output folder: the engine of ``invert`` and ``render``.

:func:`run_batch` inverts photos: each gets its own folder ``DIR/NAME/`` (see
:mod:`eg3d_invert.result_folder`); ``NAME`` is the photo's stem, made unique with ``_2``, ``_3``,
... when two photos share one or when the folder already holds another photo's result, so no
result ever overwrites another. With ``resume=True`` a photo whose folder is complete for the
same photo bytes, checkpoint and settings is skipped; one whose inversion is complete but whose
renders are not is only re-rendered from the saved result.

:func:`render_results` re-renders saved results (in place, or into complete copies under
another folder) without inverting again.

Either way a photo or folder that fails (unreadable, no face, a diverging optimisation, a
missing base checkpoint) is recorded and the batch goes on.

``run_batch(..., engine="ray")`` spreads the same per-photo work (:func:`invert_photo`) over the
workers of a Ray cluster instead of this process (:mod:`eg3d_invert.ray_batch`). Nothing is written outside ``DIR``,
no input photo is ever overwritten, and a folder of ``DIR`` that holds input photos is never
used as a result folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from ._io import ensure_writable_dir, file_sha256, remove_temporaries, unique_name, write_json_atomic
from .api import Inverter
from .errors import CheckpointError, InterruptedRun, OutputError, failure_message
from .inversion import Progress
from .options import RenderOptions
from .estimate import record_photo_time
from .outputs import write_renders
from .preprocessing.reading import IMAGE_SUFFIXES, collect_photos
from .result import InversionResult
from .result_folder import (ALIGNED_PNG, CAMERA_JSON, REPORT_JSON, TUNED_SAFETENSORS, finish_report, folder_status,
                            inversion_key, mark_renders_pending, package_versions, read_report)

if TYPE_CHECKING:
    from .ray_batch import RayEngine

SUMMARY_JSON = "summary.json"

#: ``progress(stage, done, total, info)``. Stages: ``photo`` (``done`` photos of ``total``, info =
#: the photo's name), then per photo ``align``, ``project``, ``tune`` (info: current loss),
#: ``finalize``, ``load`` (resuming from a saved inversion), ``views``, ``depth``, ``video``, ``mesh``.
BatchProgress = Callable[[str, int, "int | None", str], None]
#: ``notice(level, message)`` with level ``"note"`` or ``"warning"``: told as soon as it is known
#: (e.g. right after alignment, before the long inversion), messages name the photo.
BatchNotice = Callable[[str, str], None]


@dataclass
class PhotoOutcome:
    """What happened to one input photo (or saved result).

    Attributes:
        source: the input path as given (or found in a folder).
        name: its result folder's name; ``directory`` the folder.
        status: ``'ok'`` (inverted and/or rendered now), ``'skipped'`` (complete from an earlier
            run) or ``'failed'``.
        action: ``'inverted'``, ``'rendered'`` (from a saved inversion) or ``'skipped'``; None
            if it failed.
        stage: the stage that failed.
        error: one-line message of the failure; ``exception`` the exception itself.
        report: the folder's final ``report.json`` (metrics, timings, camera), if it has one.
        seconds: wall time spent on this photo in this run.
        attempts: how many times this run started the photo's work: 0 when it was complete
            already, more than 1 when a Ray worker crashed on it and it was tried again.
    """

    source: Path
    name: str
    directory: Path
    status: str = "failed"
    action: str | None = None
    stage: str | None = None
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)
    report: dict[str, Any] | None = field(default=None, repr=False)
    seconds: float = 0.0
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "skipped")

    @property
    def warnings(self) -> list[str]:
        """Outputs the folder's renders skipped (see :func:`~eg3d_invert.outputs.write_renders`)."""
        return list((self.report or {}).get("warnings") or [])

    def to_dict(self) -> dict[str, Any]:
        rep = self.report or {}
        return {"source": str(self.source), "name": self.name,
                "directory": str(self.directory) if self.directory.is_dir() else None,
                "status": self.status, "action": self.action, "stage": self.stage, "error": self.error,
                "warnings": self.warnings, "faces": rep.get("faces"), "camera": rep.get("camera"),
                "metrics": rep.get("metrics"),
                "timings": rep.get("timings"), "seconds": round(self.seconds, 3), "attempts": self.attempts}


# --- inputs and names ---------------------------------------------------------------------------


def is_result_folder(path: Path) -> bool:
    """True for a folder written by eg3d-invert: a result report, or (if interrupted before the
    report) the crop and camera file that a result folder starts with."""
    path = Path(path)
    if read_report(path) is not None:
        return True
    return (path / CAMERA_JSON).is_file() and (path / ALIGNED_PNG).is_file()


def collect_inputs(inputs: Iterable[os.PathLike | str], out: os.PathLike | str) -> list[Path]:
    """Photos to invert: files as given, folders recursed (suffixes matched case-insensitively,
    see :data:`~eg3d_invert.preprocessing.reading.IMAGE_SUFFIXES`), without our own outputs.

    The output folder is not searched, unless it is itself one of the input folders; result
    folders of any run (see :func:`is_result_folder`) inside the inputs are never searched, so
    their crops and renders are not taken for photos.
    """
    inputs = [Path(p) for p in inputs]
    out = Path(out)
    input_dirs = {p.resolve() for p in inputs if p.is_dir()}
    exclude: list[Path] = [] if out.resolve() in input_dirs else [out]
    for top in inputs:
        if top.is_dir():
            for root, dirs, _ in os.walk(top):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                if Path(root) != top and is_result_folder(Path(root)):
                    exclude.append(Path(root))
                    dirs[:] = []
    return collect_photos(inputs, exclude=exclude)


def find_results(paths: Iterable[os.PathLike | str]) -> list[Path]:
    """Result folders among ``paths``: each one itself if it holds a report, else its
    subfolders that do (a batch output folder)."""
    found = []
    for p in map(Path, paths):
        if (p / REPORT_JSON).is_file():
            found.append(p)
        elif p.is_dir():
            found += sorted(d for d in p.iterdir() if d.is_dir() and (d / REPORT_JSON).is_file())
    return found


def _owner(directory: Path) -> str | None:
    """The resolved path of the photo whose result ``directory`` holds (None: unknown or free)."""
    report = read_report(directory)
    if report is not None:
        path = (report.get("photo") or {}).get("path")
        if path:
            return str(path)
    return None


def plan_names(photos: Sequence[Path], out: os.PathLike | str) -> list[str]:
    """A result folder name per photo: its stem, else ``stem_2``, ``stem_3``, ... (see :func:`_plan`);
    a folder that holds an input photo is never used."""
    resolved = [Path(p).resolve() for p in photos]
    return _plan([(Path(p).stem or "photo", str(r)) for p, r in zip(photos, resolved)], Path(out), resolved)


def _plan(items: Sequence[tuple[str, str | None]], out: Path, protected: Sequence[Path] = ()) -> list[str]:
    """Folder names under ``out`` for ``(stem, owner)`` pairs, ``owner`` being the resolved path of
    the photo whose result will live there.

    A name is taken only if no earlier item has it (case-insensitively, for case-insensitive file
    systems), it is not a file, its folder does not hold another photo's complete or partial
    result (known from its report), and it holds none of the ``protected`` paths.
    """
    used: set[str] = set()

    def taken(name: str, owner: str | None) -> bool:
        target = out / name
        if name.lower() in used or (target.exists() and not target.is_dir()):
            return True
        if target.is_dir():
            existing = _owner(target)
            if existing is not None and existing != owner:
                return True
            t = target.resolve()
            return any(t == p or t in p.parents for p in protected)
        return False

    names = []
    for stem, owner in items:
        name = unique_name(stem, lambda n: taken(n, owner))
        used.add(name.lower())
        names.append(name)
    return names


# --- one photo ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _capture(outcome: PhotoOutcome, stage: Callable[[], str]) -> Iterator[None]:
    """Record any failure of the block in ``outcome`` (one line, the stage it happened in), so
    one bad input never stops a batch; interrupts propagate, the caller decides to stop."""
    try:
        yield
    except (KeyboardInterrupt, InterruptedRun):
        raise
    except Exception as exc:  # noqa: BLE001 - expected errors and bugs alike become a failed outcome
        outcome.status, outcome.action, outcome.stage = "failed", None, stage()
        outcome.error, outcome.exception = failure_message(exc, outcome.source, outcome.stage), exc


def _photo_key(inverter: Inverter, photo: Path, face_index: int) -> dict[str, Any] | None:
    if not photo.is_file():
        return None
    return inversion_key(inverter.config, face_index, file_sha256(photo))


def resume_status(inverter: Inverter, photo: Path, directory: Path, options: RenderOptions, *, face_index: int = 0,
                  resume: bool = True) -> str:
    """How much of ``photo``'s work ``directory`` holds (see
    :func:`~eg3d_invert.result_folder.folder_status`; ``'stale'`` when not resuming or the photo
    cannot be read), after removing the temporary files a killed run left there."""
    remove_temporaries(directory)  # what a killed run left here
    key = _photo_key(inverter, photo, face_index)
    return folder_status(directory, key, options) if (resume and key is not None) else "stale"


def skipped_outcome(photo: Path, directory: Path) -> PhotoOutcome:
    """The outcome of a photo whose folder is complete from an earlier run."""
    return PhotoOutcome(Path(photo), directory.name, directory, status="skipped", action="skipped",
                        report=read_report(directory), attempts=0)


def _loss_info(p: Progress) -> str:
    if p.step == 0 or not math.isfinite(p.loss):
        return ""
    return f"loss {p.loss:.4g}  lpips {p.lpips:.4f}"


def invert_photo(inverter: Inverter, photo: Path, directory: Path, options: RenderOptions, *, face_index: int = 0,
                 resume: bool = True, progress: BatchProgress | None = None,
                 notice: BatchNotice | None = None) -> PhotoOutcome:
    """Invert (or resume) one photo into ``directory`` and render its outputs.

    Right after alignment, ``notice`` hears which face was used when the photo has several, and
    each pose warning (:attr:`~eg3d_invert.preprocessing.AlignedFace.pose_warnings`).

    Expected errors become a failed :class:`PhotoOutcome`; so do unexpected ones (as "internal
    error"), so that one photo never stops a batch. ``KeyboardInterrupt`` and
    :class:`~eg3d_invert.errors.InterruptedRun` propagate: the caller decides to stop.
    """
    outcome = PhotoOutcome(Path(photo), directory.name, directory)
    t_start = time.perf_counter()
    stage = {"name": "align"}

    def report_progress(name: str, done: int, total: int | None, info: str = "") -> None:
        stage["name"] = name
        if progress is not None:
            progress(name, done, total, info)

    def on_inversion(p: Progress) -> None:
        aligned = p.extra.get("aligned") if p.stage == "align" else None
        if aligned is not None and notice is not None:
            if aligned.num_faces > 1:
                notice("note", f"{photo}: {aligned.num_faces} faces found; using #{aligned.face_index} "
                               f"(by size, #0 the largest; --face-index chooses)")
            for warning in aligned.pose_warnings:
                notice("warning", f"{photo}: {warning}")
        report_progress(p.stage, p.step, p.total, _loss_info(p))

    with _capture(outcome, lambda: stage["name"]):
        status = resume_status(inverter, Path(photo), directory, options, face_index=face_index, resume=resume)
        if status == "complete":
            outcome = skipped_outcome(photo, directory)
        else:
            if status == "inverted":
                report_progress("load", 0, 1)
                mark_renders_pending(directory)
                result = InversionResult.load(directory, base=inverter.generator, device=inverter.device)
                report_progress("load", 1, 1)
                outcome.action = "rendered"
            else:
                result = inverter.invert(photo, face_index=face_index, callback=on_inversion, name=str(photo))
                old_report = read_report(directory) or {}
                previous = set(old_report.get("files") or {}) | set(old_report.get("previous_files") or [])
                (directory / REPORT_JSON).unlink(missing_ok=True)  # from here the folder reads as unfinished
                result.save(directory)
                mark_renders_pending(directory, previous=previous)
                outcome.action = "inverted"
            renders = write_renders(result, directory, options,
                                    progress=lambda name, done, total: report_progress(name, done, total))
            outcome.report = finish_report(directory, options, renders.files, renders.timings, renders.warnings,
                                           identity=renders.identity)
            outcome.status = "ok"
            if outcome.action == "inverted":  # the next estimate for these settings starts from this photo
                record_photo_time(inverter, options, {**result.timings, **renders.timings},
                                  {"project": result.pivot.steps, "tune": result.tuning.steps})
    outcome.seconds = time.perf_counter() - t_start
    return outcome


def run_batch(inverter: Inverter, photos: Sequence[Path], out: os.PathLike | str, options: RenderOptions, *,
              face_index: int = 0, resume: bool = True, progress: BatchProgress | None = None,
              notice: BatchNotice | None = None, engine: "str | RayEngine" = "local") -> Iterator[PhotoOutcome]:
    """Invert every photo into ``out/NAME/`` (names from :func:`plan_names`); yields one outcome
    per photo. Ctrl-C propagates (as ``KeyboardInterrupt`` or ``InterruptedRun``) after the
    files of finished photos are complete; the photo in progress leaves no half-written file
    and no report claiming completeness.

    Args:
        engine: ``'local'`` (this process, photos in order) or ``'ray'`` / a
            :class:`~eg3d_invert.ray_batch.RayEngine` (the workers of a Ray cluster, each with its
            own copy of ``inverter`` rebuilt from :attr:`Inverter.recipe
            <eg3d_invert.api.Inverter.recipe>`; outcomes come as photos finish, not in order).
            Ray is imported only here, and only for that engine.

    Raises:
        OutputError: ``out`` cannot be written (checked before the first photo).
        MissingDependencyError: ``engine='ray'`` without Ray installed (raised by this call).
        ConfigError: an unknown engine, or Ray settings that cannot work.
    """
    if isinstance(engine, str) and engine == "local":
        return _run_local(inverter, photos, out, options, face_index=face_index, resume=resume, progress=progress,
                          notice=notice)
    from .ray_batch import as_ray_engine, run_ray_batch

    return run_ray_batch(inverter, photos, out, options, engine=as_ray_engine(engine), face_index=face_index,
                         resume=resume, progress=progress, notice=notice)


def _run_local(inverter: Inverter, photos: Sequence[Path], out: os.PathLike | str, options: RenderOptions, *,
               face_index: int, resume: bool, progress: BatchProgress | None,
               notice: BatchNotice | None) -> Iterator[PhotoOutcome]:
    """The local engine: photo after photo in this process, outcomes in input order."""
    out = ensure_writable_dir(out)
    remove_temporaries(out, recursive=False)  # e.g. a summary a killed run was writing
    names = plan_names(photos, out)
    for i, (photo, name) in enumerate(zip(photos, names)):
        if progress is not None:
            progress("photo", i, len(photos), str(photo))
        outcome = invert_photo(inverter, Path(photo), out / name, options, face_index=face_index, resume=resume,
                               progress=progress, notice=notice)
        if progress is not None:
            progress("photo", i + 1, len(photos), str(photo))
        yield outcome


# --- saved results ------------------------------------------------------------------------------------


def render_result(source: Path, target: Path, options: RenderOptions, *, base=None, device="auto",
                  bases: dict | None = None, progress: BatchProgress | None = None) -> PhotoOutcome:
    """Re-render the saved result ``source`` into ``target`` (``source`` itself, or a new folder
    that receives a complete copy of the result), without inverting.

    ``base`` names the base checkpoint when it is no longer where the result records it;
    ``bases`` caches loaded base generators by SHA-256 across calls. Failures become a failed
    outcome, as in :func:`invert_photo`.
    """
    from .pretrained import load_base_generator
    from .pretrained.native import read_header

    outcome = PhotoOutcome(source, target.name, target)
    bases = {} if bases is None else bases
    start, stage = time.perf_counter(), "load"

    def report_progress(name: str, done: int, total: int | None, info: str = "") -> None:
        nonlocal stage
        stage = name
        if progress is not None:
            progress(name, done, total, info)

    with _capture(outcome, lambda: stage):
        remove_temporaries(target)
        report_progress("load", 0, 1)
        key = ((read_header(source / TUNED_SAFETENSORS) or {}).get("base") or {}).get("sha256")
        if key not in bases:
            try:
                bases[key] = load_base_generator(source / TUNED_SAFETENSORS, base, device)
            except CheckpointError as exc:
                if base is not None:
                    raise
                raise CheckpointError(f"{exc} (name it with base=, on the command line --base)") from None
        result = InversionResult.load(source, base=bases[key])
        report_progress("load", 1, 1)
        if target.resolve() != source.resolve():
            stage = "save"
            (target / REPORT_JSON).unlink(missing_ok=True)
            result.save(target)
        mark_renders_pending(target)
        renders = write_renders(result, target, options,
                                progress=lambda name, done, total: report_progress(name, done, total))
        outcome.report = finish_report(target, options, renders.files, renders.timings, renders.warnings,
                                       identity=renders.identity)
        outcome.status, outcome.action = "ok", "rendered"
    outcome.seconds = time.perf_counter() - start
    return outcome


def render_results(sources: Sequence[Path], options: RenderOptions, *, out: os.PathLike | str | None = None,
                   base=None, device="auto", progress: BatchProgress | None = None) -> Iterator[PhotoOutcome]:
    """Re-render saved results (:func:`find_results`) in place, or into ``out/NAME/`` copies;
    yields one outcome per result, in order. Interrupts propagate as in :func:`run_batch`.

    Raises:
        OutputError: ``out`` cannot be written (checked before the first result).
    """
    bases: dict = {}
    if out is not None:  # copies: named like their source, never over another photo's result
        out = ensure_writable_dir(out)
        remove_temporaries(out, recursive=False)
        owners = [((read_report(src) or {}).get("photo") or {}).get("path") for src in sources]
        targets = [Path(out) / n for n in _plan([(src.name, o) for src, o in zip(sources, owners)], Path(out))]
    else:
        targets = list(sources)
    for i, (source, target) in enumerate(zip(sources, targets)):
        if progress is not None:
            progress("photo", i, len(sources), str(source))
        yield render_result(source, target, options, base=base, device=device, bases=bases, progress=progress)
        if progress is not None:
            progress("photo", i + 1, len(sources), str(source))


# --- the summary --------------------------------------------------------------------------------------


def summary(outcomes: Sequence[PhotoOutcome], *, out: os.PathLike | str, interrupted: bool = False,
            pending: Sequence[Path] = (), settings: dict[str, Any] | None = None,
            seconds: float | None = None) -> dict[str, Any]:
    """The batch's summary document (what ``summary.json`` and ``--json`` hold)."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "failed")}
    return {
        "format": "eg3d-invert/summary", "version": 1, "out": str(out),
        "succeeded": counts["ok"] + counts["skipped"], "inverted": sum(o.action == "inverted" for o in outcomes),
        "rendered": sum(o.action == "rendered" for o in outcomes), "skipped": counts["skipped"],
        "failed": counts["failed"], "interrupted": bool(interrupted),
        "not_processed": [str(p) for p in pending],
        "seconds": None if seconds is None else round(seconds, 3),
        "settings": settings or {}, "versions": package_versions(),
        "photos": [o.to_dict() for o in outcomes],
    }


def write_summary(out: os.PathLike | str, document: dict[str, Any]) -> Path:
    """Write ``out/summary.json`` atomically.

    Raises:
        OutputError: it cannot be written (the results it summarises are written already).
    """
    path = Path(out) / SUMMARY_JSON
    try:
        write_json_atomic(path, json.loads(json.dumps(document, default=str)))
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the summary: {exc.strerror or exc}") from None
    return path


__all__ = ["PhotoOutcome", "collect_inputs", "find_results", "is_result_folder", "plan_names", "invert_photo",
           "resume_status", "skipped_outcome",
           "run_batch", "render_result", "render_results", "summary", "write_summary", "SUMMARY_JSON",
           "IMAGE_SUFFIXES", "BatchProgress"]
