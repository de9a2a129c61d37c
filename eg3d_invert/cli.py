"""The ``eg3d-invert`` command line.

Thin over the public API: every command parses options, calls library functions and prints.
Results go to stdout, progress and errors to stderr. Expected errors (bad photo, bad
checkpoint, ...) print one line and exit non-zero; ``--debug`` shows the traceback.

Exit codes: 0 success, 1 some inputs failed (or an expected error), 2 usage error,
130 interrupted.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from .errors import Eg3dInvertError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn one portrait photo into a 3D head with EG3D.")
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

from enum import Enum  # noqa: E402
from pathlib import Path  # noqa: E402


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
                          padding=padding.value,
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
                                      "roll": round(face.roll, 3), "score": round(face.score, 6)}
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
                note = ""
                if face.num_faces > 1 and not all_faces:
                    note = f"{face.num_faces} faces; kept #{face.face_index} (by size)"
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
