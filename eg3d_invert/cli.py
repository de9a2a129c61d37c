"""The ``eg3d-invert`` command line.

Thin over the public API: every command parses options, calls library functions and prints.
Results go to stdout, progress and errors to stderr. Expected errors (bad photo, bad
checkpoint, ...) print one line and exit non-zero; ``--debug`` shows the traceback.

Exit codes (:mod:`eg3d_invert.errors`): 0 success, 1 some inputs failed (or an expected error),
2 usage error, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import sys
import time
from enum import Enum
from pathlib import Path

import typer
import typer.core
from rich.console import Console
from rich.markup import escape  # messages hold paths and "pip install 'eg3d-invert[ray]'": not markup

from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Eg3dInvertError
from .inversion.settings import DEFAULT_PRESET, PROJECTION_PRESETS, TUNING_PRESETS, describe_preset
from .options import RenderOptions, format_views, parse_mesh_formats, parse_views
from .preprocessing.detection import DEFAULT_THRESHOLD
from .preprocessing.reading import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES
from .pretrained.registry import DEFAULT_MODEL
from .ray_batch import RAY_INSTALL  # light: Ray itself is imported only when --engine ray runs


class _DefaultCommandGroup(typer.core.TyperGroup):
    """Runs ``invert`` when the first argument is neither a command nor a root option, so that
    ``eg3d-invert photo.jpg --out views/`` works without naming the command (``eg3d-invert
    invert photo.jpg ...`` works too; a photo named like a command needs the explicit form)."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in _ROOT_OPTIONS and "invert" in self.commands:
            args = ["invert", *args]
        return super().parse_args(ctx, args)


_ROOT_OPTIONS = ("--help", "--version")

app = typer.Typer(cls=_DefaultCommandGroup, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Turn one portrait photo into a 3D head with EG3D.\n\n"
                       "Run `eg3d-invert PHOTO_OR_FOLDER... --out DIR` (the invert command) or a command below.")
err_console = Console(stderr=True)
out_console = Console()


def _print_version(value: bool) -> None:
    if value:
        from . import __version__
        typer.echo(__version__)
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    """Turn one portrait photo into a 3D head with EG3D."""


_MAX_MP_HELP = "Refuse larger photos (decompression-bomb guard); 0 = no limit."
_NO_PHOTOS = f"no photos found in the given inputs (searched for {' '.join(IMAGE_SUFFIXES)}, any letter case)"


def _max_pixels(megapixels: float) -> int | None:
    """``--max-megapixels`` as the readers' pixel limit (0: none)."""
    return int(megapixels * 1e6) if megapixels > 0 else None


def fail(message: str, code: int = EXIT_FAILED) -> "typer.Exit":
    """Print a one-line error to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def _exit_on_error(debug: bool, usage: tuple[type[BaseException], ...]):
    """Our errors as one line and an exit code: ``usage`` ones 2, the rest 1 (tracebacks with --debug)."""
    try:
        yield
    except usage as exc:
        if debug:
            raise
        raise fail(str(exc), code=EXIT_USAGE) from None
    except Eg3dInvertError as exc:
        if debug:
            raise
        raise fail(str(exc)) from None


# --- models: the checkpoint registry, cache and downloads -----------------------------------------


def _human_size(exact: int | None, approx: int | None) -> str:
    """Megabytes for the table; ``~`` marks a rough size, ``?`` an unknown one."""
    n = exact if exact is not None else approx
    if n is None:
        return "?"
    return f"{n / 1e6:.1f} MB" if exact is not None else f"~{n / 1e6:.0f} MB"


@app.command("models")
def models_command(
    download: str = typer.Option(None, "--download", metavar="NAME",
                                 help="Download this checkpoint into the cache (progress bar on stderr)."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document instead of a table."),
    no_verify: bool = typer.Option(False, "--no-verify",
                                   help="Skip the size/SHA-256 check (the known hashes come from "
                                        "third-party mirrors, not NVIDIA)."),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error."),
) -> None:
    """List the released EG3D checkpoints and what is cached; download one with --download."""
    import json

    from . import pretrained

    downloaded = None
    if download is not None:
        try:
            name = pretrained.get_model_info(download).name
            downloaded = pretrained.resolve_checkpoint(name, progress=True, verify=not no_verify)
        except Eg3dInvertError as exc:
            if debug:
                raise
            raise fail(str(exc)) from None
        if not json_output:
            err_console.print(f"{name}: {downloaded}", highlight=False)

    models = pretrained.list_models()
    paths = {m.name: pretrained.cached_path(m.name) for m in models}
    if json_output:
        doc = {
            "cache_dir": str(pretrained.cache_dir()),
            "downloaded": str(downloaded) if downloaded is not None else None,
            "models": [{**m.to_dict(), "cached": paths[m.name].is_file(), "path": str(paths[m.name])}
                       for m in models],
        }
        typer.echo(json.dumps(doc, indent=2))
        return

    from rich.table import Table

    table = Table(title="EG3D checkpoints", caption=f"cache: {pretrained.cache_dir()}")
    table.add_column("name", no_wrap=True)
    for column in ("size", "cached", "sha256", "hash source"):
        table.add_column(column, no_wrap=True)
    sources, notes = [], []
    for m in models:
        label, source = m.name, "-"
        if not m.on_ngc:
            label += " *"
            notes.append(f"* {m.name}: {m.notes}")
        if m.sha256_source:
            sources.append(f"[{len(sources) + 1}] {m.name}: {m.sha256_source}")
            source = f"{'NVIDIA' if m.sha256_from_nvidia else 'third-party'} [{len(sources)}]"
        table.add_row(label, _human_size(m.size_bytes, m.approx_size_bytes),
                      "yes" if paths[m.name].is_file() else "no",
                      "known" if m.sha256 else "unknown", source)
    out_console.print(table)
    for note in sources + notes:
        out_console.print(note, highlight=False)


# --- info: what a checkpoint is ---------------------------------------------------------------------


@app.command("info")
def info_command(
    checkpoint: str = typer.Argument(..., help="A checkpoint file (.pkl, .pth, .safetensors) or a registry name."),
    base: str = typer.Option(None, "--base", help="Base checkpoint for weights-only or tuned files."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document."),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error."),
) -> None:
    """Describe a checkpoint: resolutions, SR module, rendering settings, size, hash."""
    import json

    from . import pretrained

    try:
        path = pretrained.resolve_checkpoint(checkpoint, download=False)
        G = pretrained.load_generator(path, base=base)
        info = pretrained.describe_checkpoint(path, G)
    except Eg3dInvertError as exc:
        if debug:
            raise
        raise fail(str(exc)) from None
    if json_output:
        typer.echo(json.dumps(info, indent=2))
        return
    from rich.table import Table

    table = Table(title=str(path), show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    rows = [
        ("format", info["format"]),
        ("image resolution", str(info["img_resolution"])),
        ("neural rendering resolution", str(info["neural_rendering_resolution"])),
        ("super-resolution", info["superresolution_module"]),
        ("z / c / w dims", f"{info['z_dim']} / {info['c_dim']} / {info['w_dim']} ({info['num_ws']} ws)"),
        ("mapping layers", str(info["mapping_layers"])),
        ("parameters", f"{info['parameters']:,}"),
        ("buffers", f"{info['buffers']:,}"),
        ("file size", f"{info['file_size']:,} bytes"),
        ("sha256", info["sha256"]),
    ] + [(f"rendering.{k}", str(v)) for k, v in info["rendering"].items()]
    for key, value in rows:
        table.add_row(key, value)
    out_console.print(table)


# --- align: photos -> EG3D crops and camera labels (preprocessing) ---------------------------------


class _PointSource(str, Enum):
    detector = "detector"
    mesh = "mesh"
    dlib = "dlib"


class _Padding(str, Enum):
    black = "black"
    reflect = "reflect"


@app.command("align")
def align_command(
    inputs: list[Path] = typer.Argument(..., help="Photos and/or folders (folders are searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: NAME.png, NAME.json and dataset.json."),
    preview: bool = typer.Option(False, "--preview", help="Also write previews/NAME.jpg: the photo with "
                                                          "landmarks, box and crop square drawn."),
    face_index: int = typer.Option(0, "--face-index", min=0, help="Which face, by size (0 = largest, as EG3D)."),
    all_faces: bool = typer.Option(False, "--all-faces", help="Align every face: NAME_face0.png, NAME_face1.png, ..."),
    threshold: float = typer.Option(DEFAULT_THRESHOLD, "--threshold", min=0.0, max=0.999,
                                    help="Detector confidence a face must exceed."),
    min_face_size: float = typer.Option(None, "--min-face-size", min=12,
                                        help="Smallest face searched for, pixels (default: 10% of the "
                                             "photo's shorter side; the official pipeline uses 20)."),
    points: _PointSource = typer.Option(_PointSource.detector, "--points",
                                        help="5 points that place the crop: MTCNN (official), the mediapipe "
                                             "mesh, or dlib's 68 points (non-commercial model)."),
    padding: _Padding = typer.Option(_Padding.black, "--padding", help="Fill outside the photo: black "
                                                                       "(official) or mirrored photo."),
    mirror_average: bool = typer.Option(False, "--mirror-average",
                                        help="Also detect on the mirror image and average the 5 points: a "
                                             "mirrored photo then gets exactly the mirrored crop (about twice "
                                             "the detection time; crops ~2 px farther from the official ones)."),
    max_megapixels: float = typer.Option(DEFAULT_MAX_PIXELS / 1e6, "--max-megapixels", min=0.0, help=_MAX_MP_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document instead of the table."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    """Cut EG3D-aligned 512x512 crops out of portrait photos and estimate their camera labels.

    Exit code 0 only if every photo succeeded, 1 if any failed (the others are still written).
    """
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .preprocessing import Aligner
    from .preprocessing.dataset import iter_align, write_dataset
    from .preprocessing.reading import collect_photos

    if all_faces and face_index:
        raise fail("--face-index and --all-faces cannot be used together", code=EXIT_USAGE)
    photos = collect_photos(inputs, exclude=[out])
    if not photos:
        raise fail(_NO_PHOTOS, code=EXIT_USAGE)
    try:
        aligner = Aligner(threshold=threshold, min_face_size=min_face_size, five_points=points.value,
                          padding=padding.value, mirror_average=mirror_average,
                          max_pixels=_max_pixels(max_megapixels))
    except Eg3dInvertError as exc:
        if debug:
            raise
        raise fail(str(exc)) from None
    _prepare_out(out, inputs)

    results = []
    interrupted = False
    progress = Progress(TextColumn("aligning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=err_console, transient=True)
    try:
        with progress:
            task = progress.add_task("", total=len(photos))
            for result in iter_align(photos, out, aligner, face_index=face_index, all_faces=all_faces,
                                     preview=preview):
                results.append(result)
                if not result.ok:
                    progress.console.print(f"[bold red]error:[/] {result.error}", highlight=False, soft_wrap=True)
                    if debug and result.exception is not None:
                        import traceback

                        progress.console.print("".join(traceback.format_exception(result.exception)),
                                               highlight=False, markup=False)
                for face in result.faces if result.ok else ():
                    if face.pose_warnings:
                        progress.console.print(f"[bold yellow]warning:[/] {result.source}: "
                                               + "; ".join(face.pose_warnings), highlight=False, soft_wrap=True)
                progress.update(task, advance=1, description=result.source.name)
    except KeyboardInterrupt:
        interrupted = True
    written = [r for r in results if r.ok]
    dataset_error = None
    if written:
        try:
            write_dataset(out, results)
        except Eg3dInvertError as exc:
            dataset_error = str(exc)
    failed = [r for r in results if not r.ok]
    if json_output:
        doc = {"out": str(out), "succeeded": len(written), "failed": len(failed),
               "photos": [{"source": str(r.source), "ok": r.ok, "error": r.error, "files": r.files,
                           "faces": [{"file": f, "face_index": face.face_index, "num_faces": face.num_faces,
                                      "yaw": round(face.yaw, 3), "pitch": round(face.pitch, 3),
                                      "roll": round(face.roll, 3), "score": round(face.score, 6),
                                      "pose_warnings": list(face.pose_warnings)}
                                     for f, face in zip(r.files, r.faces)]}
                          for r in results]}
        typer.echo(json.dumps(doc, indent=2))
    else:
        from rich.table import Table

        table = Table(title=f"eg3d-invert align -> {out}")
        for col in ("photo", "result", "faces", "yaw", "pitch", "roll", "note"):
            table.add_column(col, overflow="fold", justify="right" if col in ("faces", "yaw", "pitch", "roll") else "left")
        for r in results:
            if not r.ok:
                table.add_row(str(r.source), "[red]failed[/]", "", "", "", "", r.error)
                continue
            for f, face in zip(r.files, r.faces):
                notes = [w.split(":")[0] for w in face.pose_warnings]
                if face.num_faces > 1 and not all_faces:
                    notes.insert(0, f"{face.num_faces} faces; kept #{face.face_index} (by size)")
                note = "; ".join(notes)
                table.add_row(str(r.source), f"[green]{f}[/]", str(face.num_faces), f"{face.yaw:+.1f}",
                              f"{face.pitch:+.1f}", f"{face.roll:+.1f}", note)
        out_console.print(table)
        summary = f"{len(written)} of {len(photos)} photos aligned"
        if failed:
            summary += f", {len(failed)} failed"
        err_console.print(summary + (f"; dataset.json in {out}" if written and not dataset_error else ""),
                          highlight=False)
    if dataset_error:
        err_console.print(f"[bold red]error:[/] {dataset_error}", highlight=False, soft_wrap=True)
    if interrupted:
        err_console.print("interrupted", style="bold red")
        raise typer.Exit(EXIT_INTERRUPTED)
    if failed or dataset_error:
        raise typer.Exit(EXIT_FAILED)


# --- invert: the main command (photos -> 3D heads) and render (re-render saved results) -------------


class _Projector(str, Enum):
    w = "w"
    w_plus = "w+"


class _Engine(str, Enum):
    local = "local"
    ray = "ray"


def _ray_engine(engine: _Engine, address, workers, gpus_per_worker, cpus_per_worker, retries, device: str,
                debug: bool):
    """The invert command's Ray options as a :class:`~eg3d_invert.ray_batch.RayEngine` (None for
    the local engine); Ray itself is imported here, so a missing install is reported before any
    work. Every problem is a usage error (exit 2)."""
    given = {"--address": address, "--workers": workers, "--gpus-per-worker": gpus_per_worker,
             "--cpus-per-worker": cpus_per_worker, "--retries": retries}
    if engine is not _Engine.ray:
        if named := [flag for flag, value in given.items() if value is not None]:
            raise fail(f"{', '.join(named)} only appl{'ies' if len(named) == 1 else 'y'} with --engine ray",
                       code=EXIT_USAGE)
        return None
    from .ray_batch import RayEngine, import_ray

    try:
        import_ray()
        return RayEngine(address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                         cpus_per_worker=1.0 if cpus_per_worker is None else cpus_per_worker,
                         retries=2 if retries is None else retries, device=device, verbose=debug)
    except Eg3dInvertError as exc:
        if debug:
            raise
        raise fail(str(exc).replace("cpus_per_worker", "--cpus-per-worker"), code=EXIT_USAGE) from None


_RENDER = RenderOptions()  # the defaults every render option shows
_DEFAULT_VIEWS = format_views(_RENDER.yaws, _RENDER.pitches)


class _Display:
    """Progress on stderr: one bar for the batch, one for the current stage (with its loss), each
    with its remaining time.

    ``__call__`` has the signature of :data:`eg3d_invert.batch.BatchProgress`. Remaining times
    come from the stage's own pace once two steps are done (the first step carries one-off work),
    before that from ``estimate`` (:class:`eg3d_invert.estimate.TimeEstimate`) if given.
    """

    def __init__(self, label: str, quiet: bool, estimate=None):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.fields[stage]:>9}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                                 TextColumn("{task.fields[info]}"), console=err_console,
                                 transient=True, disable=quiet)
        self.batch = self.progress.add_task("", total=None, stage=label, info="", eta="")
        self.stage = self.progress.add_task("", total=None, stage="", info="", eta="", visible=False)
        self.current = None
        self.estimate = estimate
        self._stage_clock: dict = {}
        self._photo_clock: dict = {"start": time.perf_counter(), "done": 0, "photo_start": time.perf_counter()}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def _stage_eta(self, stage: str, done: int, total: int | None) -> str:
        now = time.perf_counter()
        clock = self._stage_clock
        if done >= 1 and "first" not in clock:  # the pace is timed from the first finished step on
            clock["first"], clock["first_done"] = now, done
        if not total or done >= total:
            return ""
        per = None
        if "first" in clock and done > clock["first_done"]:
            per = (now - clock["first"]) / (done - clock["first_done"])
        elif self.estimate is not None and stage in self.estimate.per_step:
            per = self.estimate.per_step[stage]
        elif self.estimate is not None and stage in self.estimate.stages:
            per = self.estimate.stages[stage] / total
        return "" if per is None else f"ETA {_clock(per * (total - done))}"

    def _batch_eta(self, done: int, total: int | None) -> str:
        now = time.perf_counter()
        pc = self._photo_clock
        if not total or done >= total:
            return ""
        if done > pc["done"]:
            pc["done"], pc["photo_start"] = done, now
        if done >= 1:
            per = (now - pc["start"]) / done
            return f"ETA {_clock(per * (total - done))}"
        if self.estimate is not None:
            left = self.estimate.total * (total - done) - (now - pc["photo_start"])
            return f"ETA ~{_clock(max(left, 0.0))}"
        return ""

    def __call__(self, stage: str, done: int, total: int | None, info: str = "") -> None:
        if stage == "photo":
            self.progress.update(self.batch, completed=done, total=total, info=Path(info).name,
                                 eta=self._batch_eta(done, total))
            self.progress.update(self.stage, visible=False)
            self.current = None
            return
        if stage != self.current:  # a new stage: its own bar and clock
            self.current = stage
            self._stage_clock = {}
            self.progress.reset(self.stage, total=total, completed=done, stage=stage, info=info, visible=True,
                                eta=self._stage_eta(stage, done, total))
        else:
            self.progress.update(self.stage, completed=done, total=total, info=info,
                                 eta=self._stage_eta(stage, done, total))
        self.progress.update(self.batch, eta=self._batch_eta(self._photo_clock["done"],
                                                             self.progress.tasks[self.batch].total))

    def notice(self, level: str, message: str) -> None:
        """:data:`eg3d_invert.batch.BatchNotice`."""
        (self.warning if level == "warning" else self.note)(message)

    def note(self, message: str) -> None:
        self.progress.console.print(f"[bold]note:[/] {escape(message)}", highlight=False, soft_wrap=True)

    def warning(self, message: str) -> None:
        self.progress.console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)

    def error(self, message: str, exception: BaseException | None, debug: bool) -> None:
        self.progress.console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        if debug and exception is not None:
            import traceback

            self.progress.console.print("".join(traceback.format_exception(exception)), highlight=False,
                                        markup=False)


def _clock(seconds: float) -> str:
    """``h:mm:ss`` / ``m:ss``."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def _render_options(views: str, depth: bool, video: bool, frames: int, fps: float, mesh: str, mesh_res: int,
                    mesh_level: float) -> RenderOptions:
    """Command-line render options -> :class:`RenderOptions`; a bad value is a usage error (exit 2)."""
    try:
        yaws, pitches = parse_views(views)
        return RenderOptions(yaws=yaws, pitches=pitches, depth=depth, video=video, frames=frames, fps=fps,
                             mesh_formats=parse_mesh_formats(mesh), mesh_resolution=mesh_res, mesh_level=mesh_level)
    except Eg3dInvertError as exc:
        raise fail(str(exc), code=EXIT_USAGE) from None


def _prepare_out(out: Path, inputs: list[Path]) -> None:
    """Check ``--out`` before any work: not an input photo, and a folder that can be written
    (created if needed); otherwise a usage error, so nothing is computed for nothing."""
    from ._io import ensure_writable_dir

    if any(p.exists() and p.is_file() and p.resolve() == out.resolve() for p in inputs):
        raise fail(f"--out {out} is one of the input photos", code=EXIT_USAGE)
    try:
        ensure_writable_dir(out, "--out folder")
    except Eg3dInvertError as exc:
        raise fail(str(exc), code=EXIT_USAGE) from None


def _check_device(device: str) -> None:
    """``--device`` names a device this machine has; otherwise a usage error listing the ones it has."""
    from .devices import resolve_device

    try:
        resolve_device(device)
    except Eg3dInvertError as exc:
        raise fail(f"--device: {exc}", code=EXIT_USAGE) from None


def _write_summary(out: Path, doc: dict) -> bool:
    """Write ``OUT/summary.json``; a failure is one error line (the results are written already)."""
    from .batch import write_summary

    try:
        write_summary(out, doc)
        return True
    except Eg3dInvertError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return False


def _without_prefix(message: str, source: Path) -> str:
    """An error without the ``SOURCE: `` it starts with (the table's first column shows the photo)."""
    prefix = f"{source}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _outcome_table(title: str, outcomes) -> "object":
    from rich.table import Table

    table = Table(title=title)
    for col, just in (("photo", "left"), ("result", "left"), ("yaw", "right"), ("pitch", "right"),
                      ("LPIPS", "right"), ("PSNR", "right"), ("time", "right"), ("folder or error", "left")):
        table.add_column(col, justify=just, overflow="fold")
    for o in outcomes:
        rep = o.report or {}
        cam, met = rep.get("camera") or {}, rep.get("metrics") or {}
        status = {"ok": f"[green]{o.action}[/]", "skipped": "[cyan]skipped[/]"}.get(o.status, "[red]failed[/]")
        num = lambda v, fmt: "" if not isinstance(v, (int, float)) else format(v, fmt)  # noqa: E731
        table.add_row(o.source.name, status, num(cam.get("yaw_deg"), "+.1f"), num(cam.get("pitch_deg"), "+.1f"),
                      num(met.get("lpips"), ".4f"), num(met.get("psnr_db"), ".2f"),
                      f"{o.seconds:.1f}s", o.directory.name if o.ok else _without_prefix(o.error or "", o.source))
    return table


def _run(outcomes_iter, inputs: list[Path], display: "_Display", debug: bool) -> tuple[list, list, bool, int | None]:
    """Drain a batch generator, showing each failure as it happens; Ctrl-C ends it cleanly.

    Returns the outcomes in the order of ``inputs`` (the Ray engine yields them as photos
    finish), the inputs not processed, whether the run was interrupted, and the exit code of an
    error that stopped the whole run (shown already; e.g. a Ray cluster that cannot be reached).
    """
    from .errors import ConfigError, InterruptedRun

    outcomes, interrupted, stopped = [], False, None
    try:
        for outcome in outcomes_iter:
            outcomes.append(outcome)
            if not outcome.ok:
                display.error(outcome.error, outcome.exception, debug)
            for warning in outcome.warnings:
                display.warning(f"{outcome.source}: {warning}")
    except (KeyboardInterrupt, InterruptedRun):
        interrupted = True
    except Eg3dInvertError as exc:
        if debug:
            raise
        display.error(str(exc), None, debug)
        stopped = EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED
    finally:
        close = getattr(outcomes_iter, "close", None)
        if close is not None:
            close()  # now, not whenever it is collected: the engine's clean-up (workers, temporaries) runs first
    order = {p: i for i, p in enumerate(inputs)}
    outcomes.sort(key=lambda o: order.get(o.source, len(order)))
    finished = {o.source for o in outcomes}
    return outcomes, [p for p in inputs if p not in finished], interrupted, stopped


def _finish_batch(kind: str, out: Path | None, outcomes, pending, interrupted: bool, json_output: bool, quiet: bool,
                  doc: dict, table_title: str, failed_anyway: bool = False, code: int | None = None) -> None:
    """Print the table or JSON, the one-line summary (naming ``out``'s summary.json if given),
    and exit with the documented code (``failed_anyway``: exit 1 even if every input succeeded;
    ``code``: the run was stopped by an error, exit with this)."""
    import json

    if json_output:
        typer.echo(json.dumps(doc, indent=2, default=str))
    elif not quiet:
        out_console.print(_outcome_table(table_title, outcomes))
    failed = [o for o in outcomes if not o.ok]
    if not quiet or failed or interrupted:
        done = len(outcomes) - len(failed)
        parts = [f"{a} {sum(o.action == a for o in outcomes)}" for a in ("inverted", "rendered", "skipped")
                 if any(o.action == a for o in outcomes)]
        line = f"{done} of {len(outcomes) + len(pending)} {kind} done" + (f" ({', '.join(parts)})" if parts else "")
        if failed:
            line += f", {len(failed)} failed"
        if out is not None:
            line += f"; summary: {out / 'summary.json'}"
        err_console.print(line, highlight=False, soft_wrap=True)
    if interrupted:
        err_console.print(f"interrupted; {len(pending)} not processed (run again with --resume to continue)",
                          style="bold red", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED)
    if code is not None:
        raise typer.Exit(code)
    if failed or failed_anyway:
        raise typer.Exit(EXIT_FAILED)


_PRESET_HELP = (f"Optimisation schedule: official (EG3D-projector {PROJECTION_PRESETS['official'].num_steps} W steps + "
                f"PTI {TUNING_PRESETS['official'].num_steps} steps) or fast (ours, coarse to fine: "
                f"{describe_preset('fast')}; about 1/6.4 of the official time on a CPU, quality in the README).")


def _estimate(inverter, options: RenderOptions, preset: str, debug: bool):
    """Print the expected time per photo (:mod:`eg3d_invert.estimate`); None if it cannot be had."""
    from .estimate import estimate_photo_time

    with err_console.status("estimating the time per photo...", spinner="dots"):
        try:
            expected = estimate_photo_time(inverter, options)
        except Exception as exc:  # noqa: BLE001 - an estimate must never stop the work
            if debug:
                raise
            err_console.print(f"[bold yellow]warning:[/] no time estimate ({type(exc).__name__}: {exc})",
                              highlight=False, soft_wrap=True)
            return None
    device = str(inverter.device) + (f", {torch_threads()} threads" if inverter.device.type == "cpu" else "")
    err_console.print(f"[bold]estimate:[/] {expected.describe()} on {device}, preset {preset}",
                      highlight=False, soft_wrap=True)
    return expected


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@app.command("invert")
def invert_command(
    inputs: list[Path] = typer.Argument(..., metavar="PHOTO_OR_FOLDER...",
                                        help="Portrait photos and/or folders (searched recursively; .jpg .jpeg "
                                             ".png .webp .bmp .tif .tiff in any letter case)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: one subfolder per photo, and summary.json."),
    network: str = typer.Option(DEFAULT_MODEL, "--network", "-n",
                                help="Checkpoint: a registry name (see `eg3d-invert models`; downloaded on first "
                                     "use), a .pkl/.safetensors file, or a weights-only .pth with --base."),
    base: str = typer.Option(None, "--base",
                             help="The checkpoint whose configuration a weights-only .pth from PTI / EG3D-projector "
                                  "({'G_ema': state_dict}) shares: a registry name (ffhq512-128) or a checkpoint "
                                  "file."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:1, ..."),
    preset: str = typer.Option(DEFAULT_PRESET, "--preset", help=_PRESET_HELP),
    projector: _Projector = typer.Option(None, "--projector",
                                         help="Latent space: w (official; better novel views) or w+ (closer to the "
                                              "photo, weaker 3D). Default: the preset's (w)."),
    steps: int = typer.Option(None, "--steps", min=1, help="Projection steps (default: the preset's, "
                              f"{PROJECTION_PRESETS['official'].num_steps} or {PROJECTION_PRESETS['fast'].num_steps})."),
    pti_steps: int = typer.Option(None, "--pti-steps", min=1, help="Tuning steps (default: the preset's, "
                                  f"{TUNING_PRESETS['official'].num_steps} or {TUNING_PRESETS['fast'].num_steps})."),
    seed: int = typer.Option(PROJECTION_PRESETS[DEFAULT_PRESET].seed, "--seed", min=0,
                             help="Seed of every random draw (same seed, same result)."),
    face_index: int = typer.Option(0, "--face-index", min=0, help="Which face, by size (0 = largest)."),
    refine_camera: bool = typer.Option(False, "--refine-camera", help="Also refine the estimated camera pose."),
    max_megapixels: float = typer.Option(DEFAULT_MAX_PIXELS / 1e6, "--max-megapixels", min=0.0, help=_MAX_MP_HELP),
    views: str = typer.Option(_DEFAULT_VIEWS, "--views", metavar="YAW[:PITCH],...",
                              help="Novel views in degrees (yaw + toward the subject's left, pitch + from above), "
                                   "e.g. --views=-30,0,30:10; 'none' for no views."),
    depth: bool = typer.Option(_RENDER.depth, "--depth/--no-depth", help="Depth maps of the views (PNG + raw .npy)."),
    video: bool = typer.Option(_RENDER.video, "--video/--no-video", help="The orbit video orbit.mp4."),
    frames: int = typer.Option(_RENDER.frames, "--frames", min=1, help="Video frames (one orbit)."),
    fps: float = typer.Option(_RENDER.fps, "--fps", min=1.0, help="Video frame rate."),
    mesh: str = typer.Option(",".join(_RENDER.mesh_formats), "--mesh", metavar="ply|obj|glb|none",
                             help="Mesh format(s), comma-separated, or none."),
    mesh_res: int = typer.Option(_RENDER.mesh_resolution, "--mesh-res", min=8,
                                 help="Marching-cubes lattice points per axis."),
    mesh_level: float = typer.Option(_RENDER.mesh_level, "--mesh-level",
                                     help="Density iso-level of the mesh (official 10)."),
    resume: bool = typer.Option(True, "--resume/--overwrite",
                                help="Skip photos whose outputs are complete for the same settings and only "
                                     "re-render those whose inversion is (default), or redo everything."),
    engine: _Engine = typer.Option(_Engine.local, "--engine",
                                   help="local: photo after photo in this process. ray: spread the photos over "
                                        f"the workers of a Ray cluster ({escape(RAY_INSTALL)}); OUT must be on a file "
                                        "system every node sees."),
    address: str = typer.Option(None, "--address", metavar="auto|HOST:PORT|ray://HOST:PORT",
                                help="With --engine ray: the cluster to join (auto: the one `ray start --head` "
                                     "started). Default: start a local Ray instance on this machine."),
    workers: int = typer.Option(None, "--workers", min=1,
                                help="With --engine ray: workers, each loading the models once (default: as many "
                                     "as fit: one per GPU, else one per --cpus-per-worker CPUs)."),
    gpus_per_worker: float = typer.Option(None, "--gpus-per-worker", min=0.0,
                                          help="With --engine ray: GPUs per worker (default 1 if the cluster has "
                                               "GPUs, else 0)."),
    cpus_per_worker: float = typer.Option(None, "--cpus-per-worker",
                                          help="With --engine ray: CPUs per worker, also its torch threads "
                                               "(default 1)."),
    retries: int = typer.Option(None, "--retries", min=0,
                                help="With --engine ray: how many more times a photo is tried when its worker "
                                     "crashes (killed, out of memory) (default 2); then it is recorded as failed."),
    estimate: bool = typer.Option(True, "--estimate/--no-estimate",
                                  help="Print the expected time per photo before starting (measures a few steps, "
                                       "about a minute on a CPU for the full model, unless a photo with the same settings "
                                       "finished before). Not with --engine ray."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as one JSON document on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or table; errors only."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    """Invert portrait photos into 3D heads: align, project, tune, then render views, depth, video, mesh.

    Writes OUT/NAME/ per photo (aligned.png, camera.json, reconstruction.png, views/, views.png,
    depth/, orbit.mp4, mesh.*, pivot.pt, pivot.npy, tuned.safetensors, report.json) and OUT/summary.json.
    --engine ray writes the same folders from the workers of a Ray cluster.
    Exit codes: 0 all photos done, 1 some failed, 2 usage error (also: --engine ray without Ray
    installed), 130 interrupted.
    """
    import time

    from . import pretrained
    from .api import Inverter
    from .batch import collect_inputs, run_batch, summary
    from .errors import ConfigError, UnknownModelError

    options = _render_options(views, depth, video, frames, fps, mesh, mesh_res, mesh_level)
    ray_engine = _ray_engine(engine, address, workers, gpus_per_worker, cpus_per_worker, retries, device, debug)
    if ray_engine is None or ray_engine.address is None:  # else the devices are the cluster's, not this machine's
        _check_device(device)
    if not Path(network).exists() and not network.lower().startswith(("http://", "https://")) \
            and pretrained.registry.find_model(network) is None:
        names = ", ".join(m.name for m in pretrained.list_models())
        raise fail(f"--network {network}: no such file and not a known checkpoint name (known: {names})",
                   code=EXIT_USAGE)
    photos = collect_inputs(inputs, out)
    if not photos:
        raise fail(_NO_PHOTOS, code=EXIT_USAGE)
    _prepare_out(out, inputs)  # before the checkpoint and LPIPS are loaded (and maybe downloaded)
    with _exit_on_error(debug, usage=(ConfigError, UnknownModelError)):
        # With Ray, this copy only decides what is complete already: the workers build their own.
        inverter = Inverter.from_pretrained(network, "cpu" if ray_engine else device, preset=preset,
                                            projector=projector.value if projector is not None else None,
                                            steps=steps, pti_steps=pti_steps, seed=seed,
                                            camera_refinement=refine_camera, max_pixels=_max_pixels(max_megapixels),
                                            base=base)

    settings = {**inverter.config, "face_index": face_index, "render": options.to_dict(),
                "engine": ray_engine.to_dict() if ray_engine else {"name": "local"}}
    if ray_engine:
        settings["device"] = device  # the workers' (each report.json has the one it resolved to)
    # The estimate times this process's device; Ray workers run elsewhere, several at once.
    expected = _estimate(inverter, options, preset, debug) if estimate and not quiet and not ray_engine else None
    t0 = time.perf_counter()
    with _Display("photos", quiet, expected) as display:
        outcomes, pending, interrupted, stopped = _run(
            run_batch(inverter, photos, out, options, face_index=face_index, resume=resume, progress=display,
                      notice=display.notice, engine=ray_engine or "local"), photos, display, debug)
    doc = summary(outcomes, out=out, interrupted=interrupted, pending=pending, settings=settings,
                  seconds=time.perf_counter() - t0)
    written = _write_summary(out, doc)
    _finish_batch("photos", out if written else None, outcomes, pending, interrupted, json_output, quiet, doc,
                  f"eg3d-invert -> {out}", failed_anyway=not written, code=stopped)


@app.command("render")
def render_command(
    results: list[Path] = typer.Argument(..., metavar="DIR...",
                                         help="Result folders (OUT/NAME) or batch output folders (OUT)."),
    out: Path = typer.Option(None, "--out", "-o",
                             help="Write complete result folders to OUT/NAME/ instead of updating DIR in place."),
    base: str = typer.Option(None, "--base", help="Base checkpoint of tuned.safetensors if it is no longer where "
                                                 "report.json says (path or registry name)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, else MPS, else CPU), cpu, cuda, ..."),
    views: str = typer.Option(_DEFAULT_VIEWS, "--views", metavar="YAW[:PITCH],...",
                              help="Novel views in degrees, e.g. --views=-30,0,30:10; 'none' for none."),
    depth: bool = typer.Option(_RENDER.depth, "--depth/--no-depth", help="Depth maps of the views."),
    video: bool = typer.Option(_RENDER.video, "--video/--no-video", help="The orbit video."),
    frames: int = typer.Option(_RENDER.frames, "--frames", min=1, help="Video frames."),
    fps: float = typer.Option(_RENDER.fps, "--fps", min=1.0, help="Video frame rate."),
    mesh: str = typer.Option(",".join(_RENDER.mesh_formats), "--mesh", metavar="ply|obj|glb|none",
                             help="Mesh format(s) or none."),
    mesh_res: int = typer.Option(_RENDER.mesh_resolution, "--mesh-res", min=8,
                                 help="Marching-cubes lattice points per axis."),
    mesh_level: float = typer.Option(_RENDER.mesh_level, "--mesh-level", help="Density iso-level (official 10)."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as one JSON document."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or table; errors only."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    """Re-render views, depth, video and mesh of saved results, without inverting again.

    Same options, same images as the run that made them. Exit codes as for invert.
    """
    import time

    from .batch import find_results, render_results, summary

    options = _render_options(views, depth, video, frames, fps, mesh, mesh_res, mesh_level)
    _check_device(device)
    dirs = find_results(results)
    if not dirs:
        raise fail("no saved results found (folders holding report.json)", code=EXIT_USAGE)
    if out is not None:
        _prepare_out(out, [])
    t0 = time.perf_counter()
    with _Display("results", quiet) as display:
        outcomes, pending, interrupted, stopped = _run(render_results(dirs, options, out=out, base=base, device=device,
                                                                      progress=display), dirs, display, debug)
    doc = summary(outcomes, out=out or "", interrupted=interrupted, pending=pending,
                  settings={"render": options.to_dict()}, seconds=time.perf_counter() - t0)
    written = _write_summary(out, doc) if out is not None else False
    _finish_batch("results", out if written else None, outcomes, pending, interrupted, json_output, quiet, doc,
                  f"eg3d-invert render -> {out or 'in place'}", failed_anyway=out is not None and not written,
                  code=stopped)


# --- view: look at results and edit them in the browser ----------------------------------------------


@app.command("view")
def view_command(
    results: list[Path] = typer.Argument(..., metavar="RESULT_DIR...",
                                         help="Result folders (OUT/NAME) or batch output folders (OUT)."),
    port: int = typer.Option(None, "--port", min=0, max=65535,
                             help="Port on 127.0.0.1 (default 8765, or any free one if it is taken; 0: any free "
                                  "one)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Only print the URL; do not open a browser."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, else MPS, else CPU), cpu, cuda, ..."),
    base: str = typer.Option(None, "--base", help="Base checkpoint of tuned.safetensors if it is no longer where "
                                                 "report.json says (path or registry name)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors, and the access log."),
) -> None:
    """Look at results in the browser: turn the head live, see its mesh in 3D, edit its latent.

    Serves a page on 127.0.0.1 only (other machines cannot connect) until Ctrl-C, and prints its
    URL on stdout. Save in the page writes into RESULT_DIR/edits/ and never changes the result's
    own files. Exit codes: 0 stopped with Ctrl-C (the normal way to stop a server, so not 130),
    1 a result could not be loaded or the port is taken, 2 usage error.
    """
    from .batch import find_results
    from .errors import ConfigError
    from .viewer import serve
    from .viewer.server import DEFAULT_PORT, PortError

    _check_device(device)  # before the port is taken and anything is loaded
    dirs = find_results(results)
    if not dirs:
        raise fail("no saved results found (folders holding report.json)", code=EXIT_USAGE)

    def start(p: int):
        return serve(dirs, port=p, device=device, base=base, debug=debug,
                     on_load=lambda d: err_console.print(f"loading {d}", highlight=False))

    with _exit_on_error(debug, usage=(ConfigError,)):
        try:
            server = start(DEFAULT_PORT if port is None else port)
        except PortError:
            if port is not None:
                raise
            server = start(0)  # the default port is taken: any free one will do
    for warning in server.viewer.warnings:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    typer.echo(server.url)
    sys.stdout.flush()  # scripts read the URL while the server runs
    err_console.print(f"viewing {len(dirs)} result{'s' if len(dirs) > 1 else ''} at {server.url} "
                      f"(127.0.0.1 only); Ctrl-C stops", highlight=False)
    if not no_browser:
        server.open_browser()
    try:
        while not server.wait(0.5):  # short waits: Ctrl-C reaches the main thread
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    err_console.print("stopped", highlight=False)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=True)
    except Eg3dInvertError as exc:  # pragma: no cover - commands catch their own; last resort
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":  # pragma: no cover
    main()
