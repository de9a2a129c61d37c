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


def fail(message: str, code: int = 1) -> "typer.Exit":
    """Print a one-line error to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


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
