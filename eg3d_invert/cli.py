"""The ``eg3d-invert`` command line.

Thin over the public API: every command parses options, calls library functions and prints.
Results go to stdout, progress and errors to stderr. Expected errors (bad photo, bad
checkpoint, ...) print one line and exit non-zero; ``--debug`` shows the traceback.

Exit codes: 0 success, 1 some inputs failed (or an expected error), 2 usage error,
130 interrupted.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer
import typer.core
from rich.console import Console

from .errors import Eg3dInvertError

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
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    """Turn one portrait photo into a 3D head with EG3D."""


def fail(message: str, code: int = 1) -> "typer.Exit":
    """Print a one-line error to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


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
    threshold: float = typer.Option(0.9, "--threshold", min=0.0, max=0.999,
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
    max_megapixels: float = typer.Option(100.0, "--max-megapixels", min=0.0,
                                         help="Refuse larger photos (decompression-bomb guard); 0 = no limit."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON document instead of the table."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    """Cut EG3D-aligned 512x512 crops out of portrait photos and estimate their camera labels.

    Exit code 0 only if every photo succeeded, 1 if any failed (the others are still written).
    """
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .preprocessing import Aligner
    from .preprocessing.batch import collect_photos, iter_align, write_dataset

    if all_faces and face_index:
        raise fail("--face-index and --all-faces cannot be used together", code=2)
    photos = collect_photos(inputs, exclude=[out])
    if not photos:
        raise fail("no photos found in the given inputs (searched for "
                   ".jpg .jpeg .png .webp .bmp .tif .tiff)")
    try:
        aligner = Aligner(threshold=threshold, min_face_size=min_face_size, five_points=points.value,
                          padding=padding.value, mirror_average=mirror_average,
                          max_pixels=int(max_megapixels * 1e6) if max_megapixels > 0 else None)
    except Eg3dInvertError as exc:
        if debug:
            raise
        raise fail(str(exc)) from None

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
    if written:
        write_dataset(out, results)
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
        err_console.print(summary + (f"; dataset.json in {out}" if written else ""), highlight=False)
    if interrupted:
        err_console.print("interrupted", style="bold red")
        raise typer.Exit(130)
    if failed:
        raise typer.Exit(1)


# --- invert: the main command (photos -> 3D heads) and render (re-render saved results) -------------


class _Projector(str, Enum):
    w = "w"
    w_plus = "w+"


_DEFAULT_VIEWS = "-30,-15,0,15,30"
_RENDER_STAGES = ("views", "depth", "video", "mesh")


class _Display:
    """Progress on stderr: one bar for the batch, one for the current stage (with its loss).

    ``__call__`` has the signature of :data:`eg3d_invert.batch.BatchProgress`.
    """

    def __init__(self, label: str, quiet: bool):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.fields[stage]:>9}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=err_console,
                                 transient=True, disable=quiet)
        self.batch = self.progress.add_task("", total=None, stage=label, info="")
        self.stage = self.progress.add_task("", total=None, stage="", info="", visible=False)
        self.current = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int | None, info: str = "") -> None:
        if stage == "photo":
            self.progress.update(self.batch, completed=done, total=total, info=Path(info).name)
            self.progress.update(self.stage, visible=False)
            self.current = None
            return
        if stage != self.current:  # a new stage: its own bar and clock
            self.current = stage
            self.progress.reset(self.stage, total=total, completed=done, stage=stage, info=info, visible=True)
        else:
            self.progress.update(self.stage, completed=done, total=total, info=info)

    def error(self, message: str, exception: BaseException | None, debug: bool) -> None:
        self.progress.console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        if debug and exception is not None:
            import traceback

            self.progress.console.print("".join(traceback.format_exception(exception)), highlight=False,
                                        markup=False)


def _render_options(views: str, depth: bool, video: bool, frames: int, fps: float, mesh: str, mesh_res: int,
                    mesh_level: float):
    """Command-line render options -> :class:`RenderOptions`; a bad value is a usage error (exit 2)."""
    from .errors import ConfigError
    from .outputs import RenderOptions, parse_views

    try:
        yaws, pitches = parse_views(views)
        formats = () if mesh.strip().lower() in ("none", "") else tuple(f.strip() for f in mesh.split(","))
        return RenderOptions(yaws=yaws, pitches=pitches, depth=depth, video=video, frames=frames, fps=fps,
                             mesh_formats=formats, mesh_resolution=mesh_res, mesh_level=mesh_level)
    except ConfigError as exc:
        raise fail(str(exc), code=2) from None


def _check_out(out: Path, inputs: list[Path]) -> None:
    if out.exists() and not out.is_dir():
        raise fail(f"--out {out} is a file; give a folder", code=2)
    if any(p.exists() and p.is_file() and p.resolve() == out.resolve() for p in inputs):
        raise fail(f"--out {out} is one of the input photos", code=2)


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


def _finish_batch(kind: str, out: Path | None, outcomes, pending, interrupted: bool, json_output: bool, quiet: bool,
                  doc: dict, table_title: str) -> None:
    """Print the table or JSON, the one-line summary, and exit with the documented code."""
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
        raise typer.Exit(130)
    if failed:
        raise typer.Exit(1)


@app.command("invert")
def invert_command(
    inputs: list[Path] = typer.Argument(..., metavar="PHOTO_OR_FOLDER...",
                                        help="Portrait photos and/or folders (searched recursively; .jpg .jpeg "
                                             ".png .webp .bmp .tif .tiff in any letter case)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: one subfolder per photo, and summary.json."),
    network: str = typer.Option("ffhq512-128", "--network", "-n",
                                help="Checkpoint: a registry name (see `eg3d-invert models`; downloaded on first "
                                     "use) or a .pkl/.safetensors file."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:1, ..."),
    preset: str = typer.Option("official", "--preset",
                               help="Optimisation schedule: official (EG3D-projector 500 W steps + PTI 350 "
                                    "steps) or fast (250 + 175 steps without depth jitter, PTI's locality "
                                    "regulariser: as good on our benchmarks in about two thirds of the time)."),
    projector: _Projector = typer.Option(None, "--projector",
                                         help="Latent space: w (official; better novel views) or w+ (closer to the "
                                              "photo, weaker 3D). Default: the preset's (w)."),
    steps: int = typer.Option(None, "--steps", min=1, help="Projection steps (default: the preset's, 500 or 250)."),
    pti_steps: int = typer.Option(None, "--pti-steps", min=1, help="Tuning steps (default: the preset's, 350 or 175)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of every random draw (same seed, same result)."),
    face_index: int = typer.Option(0, "--face-index", min=0, help="Which face, by size (0 = largest)."),
    refine_camera: bool = typer.Option(False, "--refine-camera", help="Also refine the estimated camera pose."),
    views: str = typer.Option(_DEFAULT_VIEWS, "--views", metavar="YAW[:PITCH],...",
                              help="Novel views in degrees (yaw + toward the subject's left, pitch + from above), "
                                   "e.g. --views=-30,0,30:10; 'none' for no views."),
    depth: bool = typer.Option(True, "--depth/--no-depth", help="Depth maps of the views (PNG + raw .npy)."),
    video: bool = typer.Option(True, "--video/--no-video", help="The orbit video orbit.mp4."),
    frames: int = typer.Option(120, "--frames", min=1, help="Video frames (one orbit)."),
    fps: float = typer.Option(60.0, "--fps", min=1.0, help="Video frame rate."),
    mesh: str = typer.Option("ply", "--mesh", metavar="ply|obj|glb|none",
                             help="Mesh format(s), comma-separated, or none."),
    mesh_res: int = typer.Option(256, "--mesh-res", min=8, help="Marching-cubes lattice points per axis."),
    mesh_level: float = typer.Option(10.0, "--mesh-level", help="Density iso-level of the mesh (official 10)."),
    resume: bool = typer.Option(True, "--resume/--overwrite",
                                help="Skip photos whose outputs are complete for the same settings and only "
                                     "re-render those whose inversion is (default), or redo everything."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as one JSON document on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or table; errors only."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    """Invert portrait photos into 3D heads: align, project, tune, then render views, depth, video, mesh.

    Writes OUT/NAME/ per photo (aligned.png, camera.json, reconstruction.png, views/, views.png,
    depth/, orbit.mp4, mesh.*, pivot.pt, tuned.safetensors, report.json) and OUT/summary.json.
    Exit codes: 0 all photos done, 1 some failed, 2 usage error, 130 interrupted.
    """
    import time

    from . import pretrained
    from .api import Inverter
    from .batch import collect_inputs, run_batch, summary, write_summary
    from .errors import ConfigError, InterruptedRun, UnknownModelError

    options = _render_options(views, depth, video, frames, fps, mesh, mesh_res, mesh_level)
    _check_out(out, inputs)
    if not Path(network).exists() and not network.lower().startswith(("http://", "https://")) \
            and pretrained.registry.find_model(network) is None:
        names = ", ".join(m.name for m in pretrained.list_models())
        raise fail(f"--network {network}: no such file and not a known checkpoint name (known: {names})", code=2)
    photos = collect_inputs(inputs, out)
    if not photos:
        from .batch import IMAGE_SUFFIXES

        raise fail(f"no photos found in the given inputs (searched for {' '.join(IMAGE_SUFFIXES)}, any letter case)",
                   code=2)
    try:
        inverter = Inverter.from_pretrained(network, device, preset=preset,
                                            projector=projector.value if projector is not None else None,
                                            steps=steps, pti_steps=pti_steps, seed=seed,
                                            camera_refinement=refine_camera)
    except (ConfigError, UnknownModelError) as exc:
        if debug:
            raise
        raise fail(str(exc), code=2) from None
    except Eg3dInvertError as exc:
        if debug:
            raise
        raise fail(str(exc)) from None

    settings = {**inverter.config, "face_index": face_index, "render": options.to_dict()}
    outcomes, interrupted = [], False
    t0 = time.perf_counter()
    try:
        with _Display("photos", quiet) as display:
            for outcome in run_batch(inverter, photos, out, options, face_index=face_index, resume=resume,
                                     progress=display):
                outcomes.append(outcome)
                if not outcome.ok:
                    display.error(outcome.error, outcome.exception, debug)
    except (KeyboardInterrupt, InterruptedRun):
        interrupted = True
    pending = photos[len(outcomes):]
    doc = summary(outcomes, out=out, interrupted=interrupted, pending=pending, settings=settings,
                  seconds=time.perf_counter() - t0)
    write_summary(out, doc)
    _finish_batch("photos", out, outcomes, pending, interrupted, json_output, quiet, doc, f"eg3d-invert -> {out}")


def _result_dirs(paths: list[Path]) -> list[Path]:
    """Result folders among ``paths``: each one itself if it holds report.json, else its
    subfolders that do (a batch output folder)."""
    from .api import REPORT_JSON

    found = []
    for p in paths:
        if (p / REPORT_JSON).is_file():
            found.append(p)
        elif p.is_dir():
            found += sorted(d for d in p.iterdir() if d.is_dir() and (d / REPORT_JSON).is_file())
    return found


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
    depth: bool = typer.Option(True, "--depth/--no-depth", help="Depth maps of the views."),
    video: bool = typer.Option(True, "--video/--no-video", help="The orbit video."),
    frames: int = typer.Option(120, "--frames", min=1, help="Video frames."),
    fps: float = typer.Option(60.0, "--fps", min=1.0, help="Video frame rate."),
    mesh: str = typer.Option("ply", "--mesh", metavar="ply|obj|glb|none", help="Mesh format(s) or none."),
    mesh_res: int = typer.Option(256, "--mesh-res", min=8, help="Marching-cubes lattice points per axis."),
    mesh_level: float = typer.Option(10.0, "--mesh-level", help="Density iso-level (official 10)."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as one JSON document."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or table; errors only."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    """Re-render views, depth, video and mesh of saved results, without inverting again.

    Same options, same images as the run that made them. Exit codes as for invert.
    """
    import time

    from .api import TUNED_SAFETENSORS, InversionResult, load_base_generator
    from .batch import PhotoOutcome, summary, write_summary
    from .errors import CheckpointError, InterruptedRun
    from .outputs import finish_report, mark_renders_pending, read_report, write_renders
    from .pretrained import native

    options = _render_options(views, depth, video, frames, fps, mesh, mesh_res, mesh_level)
    dirs = _result_dirs(results)
    if not dirs:
        raise fail("no saved results found (folders holding report.json)", code=2)
    if out is not None:
        _check_out(out, [])
    bases: dict[str, object] = {}
    outcomes, used, interrupted = [], set(), False
    t0 = time.perf_counter()
    try:
        with _Display("results", quiet) as display:
            for i, d in enumerate(dirs):
                display("photo", i, len(dirs), str(d))
                name, k = d.name, 1
                while out is not None and name.lower() in used:
                    k += 1
                    name = f"{d.name}_{k}"
                used.add(name.lower())
                target = d if out is None else out / name
                outcome = PhotoOutcome(d, name, target)
                start, stage = time.perf_counter(), "load"
                try:
                    display("load", 0, 1)
                    key = ((native.read_header(d / TUNED_SAFETENSORS) or {}).get("base") or {}).get("sha256")
                    if key not in bases:
                        try:
                            bases[key] = load_base_generator(d / TUNED_SAFETENSORS, base, device)
                        except CheckpointError as exc:
                            if base is not None:
                                raise
                            raise CheckpointError(f"{exc} (give it with --base)") from None
                    result = InversionResult.load(d, base=bases[key])
                    display("load", 1, 1)
                    if target.resolve() != d.resolve():
                        stage = "save"
                        (target / "report.json").unlink(missing_ok=True)
                        result.save(target)
                    mark_renders_pending(target)

                    def prog(s, done, total):
                        nonlocal stage
                        stage = s
                        display(s, done, total)

                    files, timings = write_renders(result, target, options, progress=prog)
                    outcome.report = finish_report(target, options, files, timings)
                    outcome.status, outcome.action = "ok", "rendered"
                except (KeyboardInterrupt, InterruptedRun):
                    raise
                except Exception as exc:  # noqa: BLE001 - one bad folder must not stop the others
                    detail = str(exc) if isinstance(exc, Eg3dInvertError) else f"internal error: {type(exc).__name__}: {exc}"
                    outcome.error = f"{d}: {stage}: {' '.join(detail.split())}"
                    outcome.exception, outcome.stage = exc, stage
                    display.error(outcome.error, exc, debug)
                outcome.seconds = time.perf_counter() - start
                if outcome.ok and outcome.report is None:
                    outcome.report = read_report(target)
                outcomes.append(outcome)
                display("photo", i + 1, len(dirs), str(d))
    except (KeyboardInterrupt, InterruptedRun):
        interrupted = True
    pending = dirs[len(outcomes):]
    doc = summary(outcomes, out=out or "", interrupted=interrupted, pending=pending,
                  settings={"render": options.to_dict()}, seconds=time.perf_counter() - t0)
    if out is not None:
        write_summary(out, doc)
    _finish_batch("results", out, outcomes, pending, interrupted, json_output, quiet, doc,
                  f"eg3d-invert render -> {out or 'in place'}")


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
    own files. Exit codes: 0 stopped with Ctrl-C, 1 a result could not be loaded or the port is
    taken, 2 usage error.
    """
    from .errors import ConfigError
    from .viewer import serve
    from .viewer.server import DEFAULT_PORT, PortError

    dirs = _result_dirs(results)
    if not dirs:
        raise fail("no saved results found (folders holding report.json)", code=2)

    def start(p: int):
        return serve(dirs, port=p, device=device, base=base, debug=debug,
                     on_load=lambda d: err_console.print(f"loading {d}", highlight=False))

    try:
        try:
            server = start(DEFAULT_PORT if port is None else port)
        except PortError:
            if port is not None:
                raise
            server = start(0)  # the default port is taken: any free one will do
    except ConfigError as exc:
        if debug:
            raise
        raise fail(str(exc), code=2) from None
    except Eg3dInvertError as exc:
        if debug:
            raise
        raise fail(str(exc)) from None
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
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
