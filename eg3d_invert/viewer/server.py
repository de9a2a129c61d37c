"""The viewer's HTTP server: Starlette routes served by uvicorn on 127.0.0.1 only.

HTTP contract (every error is JSON ``{"error": "one line"}``):

* ``GET /`` the page; ``GET /static/...`` its files (the vendored three.js included).
* ``GET /api/results`` JSON list of the loaded results, each with its ``id``.
* ``GET /api/render?result=ID&yaw=DEG&pitch=DEG&kind=image|depth|raw&quality=preview|full``
  plus optional edit parameters ``sefa=INDEX:OFFSET,...`` (offsets in sigma units), ``psi=``
  (truncation), ``other=ID&blend=0..1&layers=all|coarse|fine`` (interpolation / style mixing),
  and ``client=TOKEN&seq=N`` -> ``image/png``. A request whose ``seq`` is older than the newest
  one of the same client for the same result, and which has not started rendering, is answered
  ``204 No Content`` (superseded).
* ``GET /api/mesh?result=ID[&edit parameters][&level=L]`` -> ``model/gltf-binary``.
* ``POST /api/save`` with a JSON object of the render parameters (``result``, ``yaw``, ``pitch``,
  ``kind``, edit parameters) -> JSON ``{"folder": ..., "files": [...]}``.
* ``GET /files/ID/PATH`` a file inside result ``ID``'s folder.

Status codes: 400 bad parameters (unknown names, values out of range, malformed JSON), 404
unknown result or any path outside the result folders and the package's static files, 405 wrong
method, 415 a save that is not ``application/json``, 422 a mesh with no surface at the level,
500 anything else (for example a folder that cannot be written). Requests whose ``Host`` is not
``127.0.0.1`` or ``localhost`` get 400 (a page elsewhere cannot reach the viewer through DNS
rebinding), and Save only takes JSON bodies, which a page elsewhere cannot send without a CORS
preflight that this server never grants.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import webbrowser
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import ConfigError, EmptyMeshError, Eg3dInvertError
from .editing import Edit
from .frames import FrameSpec, LiveSettings, encode_png
from .session import UnknownResultError, Viewer

HOST = "127.0.0.1"
#: Port of ``eg3d-invert view`` when none is given.
DEFAULT_PORT = 8765
STATIC = Path(__file__).parent / "static"
#: Query parameters of the render and mesh endpoints.
VIEW_PARAMS = {"result", "yaw", "pitch", "kind", "quality"}
EDIT_PARAMS = {"sefa", "psi", "other", "blend", "layers"}
ORDER_PARAMS = {"client", "seq"}
MAX_SAVE_BODY = 1 << 16


class PortError(Eg3dInvertError):
    """The port cannot be listened on (in use, or not allowed)."""


# --- request order -----------------------------------------------------------------------------------


@dataclass
class RequestOrder:
    """The newest ``seq`` per (client, result): older requests still waiting may be dropped."""

    _latest: dict[tuple[str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def arrive(self, client: str | None, result: str, seq: int | None) -> None:
        if client is None or seq is None:
            return
        with self._lock:
            key = (client, result)
            self._latest[key] = max(seq, self._latest.get(key, seq))

    def superseded(self, client: str | None, result: str, seq: int | None) -> bool:
        if client is None or seq is None:
            return False
        with self._lock:
            return seq < self._latest.get((client, result), seq)

    def waiting(self, client: str, result: str) -> int | None:
        """The newest seq seen (tests use it to know a request has arrived)."""
        with self._lock:
            return self._latest.get((client, result))


# --- parameters ----------------------------------------------------------------------------------------


def _params(items: Sequence[tuple[str, Any]], allowed: set[str]) -> dict[str, str]:
    """Query (or JSON) items as a dict of strings; unknown or repeated names are a 400."""
    out: dict[str, str] = {}
    for name, value in items:
        if name not in allowed:
            raise ConfigError(f"unknown parameter {name!r} (allowed: {', '.join(sorted(allowed))})")
        if name in out:
            raise ConfigError(f"parameter {name!r} given twice")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"parameter {name!r} must be a string or a number, got {type(value).__name__}")
        out[name] = str(value)
    return out


def _order(params: dict[str, str]) -> tuple[str | None, int | None]:
    client, seq = params.get("client"), params.get("seq")
    if (client is None) != (seq is None):
        raise ConfigError("client and seq go together")
    if seq is None:
        return None, None
    if not seq.isdigit() or len(seq) > 15 or not 0 < len(client) <= 64:
        raise ConfigError("seq must be a non-negative integer and client a token of 1-64 characters")
    return client, int(seq)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status,
                        headers={"Cache-Control": "no-store"})


def _status(exc: Exception) -> int:
    if isinstance(exc, UnknownResultError):
        return 404
    if isinstance(exc, ConfigError):
        return 400
    if isinstance(exc, EmptyMeshError):
        return 422
    return 500


def _json_errors(endpoint: Callable) -> Callable:
    """Turn the library's errors into JSON responses with the contract's status codes."""

    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except HTTPException:
            raise
        except Eg3dInvertError as exc:
            return _error(_status(exc), str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the server; say what it was
            if request.app.state.debug:
                raise
            return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    return wrapped


# --- the app -------------------------------------------------------------------------------------------


def create_app(viewer: Viewer, *, debug: bool = False) -> Starlette:
    """The Starlette application of ``viewer`` (see the module docstring for the routes)."""
    order = RequestOrder()

    async def index(request: Request) -> Response:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"), headers={"Cache-Control": "no-store"})

    @_json_errors
    async def results(request: Request) -> Response:
        _params(request.query_params.multi_items(), set())
        return JSONResponse(viewer.describe())

    @_json_errors
    async def render(request: Request) -> Response:
        params = _params(request.query_params.multi_items(), VIEW_PARAMS | EDIT_PARAMS | ORDER_PARAMS)
        session = viewer.session(params.get("result"))
        spec, edit = FrameSpec.from_params(params), Edit.from_params(params)
        other = viewer.other(session, edit)
        client, seq = _order(params)
        order.arrive(client, session.id, seq)

        def work() -> tuple[bytes | None, float]:
            with session.lock:
                if order.superseded(client, session.id, seq):
                    return None, 0.0
                t0 = time.perf_counter()
                png = encode_png(session.frame(spec, edit, other))
                return png, time.perf_counter() - t0

        png, seconds = await run_in_threadpool(work)
        if png is None:
            return Response(status_code=204, headers={"Cache-Control": "no-store"})
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "no-store", "X-Render-Seconds": f"{seconds:.4f}"})

    @_json_errors
    async def mesh(request: Request) -> Response:
        params = _params(request.query_params.multi_items(), {"result", "level"} | EDIT_PARAMS)
        session = viewer.session(params.get("result"))
        edit = Edit.from_params(params)
        other = viewer.other(session, edit)
        level = None
        if "level" in params:
            try:
                level = float(params["level"])
            except ValueError:
                raise ConfigError(f"level must be a number, got {params['level']!r}") from None
            if not -1e4 < level < 1e4:
                raise ConfigError(f"level must be a finite density value, got {params['level']!r}")

        def work() -> bytes:
            with session.lock:
                return session.mesh_glb(edit, other, level)

        glb = await run_in_threadpool(work)
        return Response(glb, media_type="model/gltf-binary", headers={"Cache-Control": "no-store"})

    @_json_errors
    async def save(request: Request) -> Response:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return _error(415, "save takes a JSON object (Content-Type: application/json)")
        body = await request.body()
        if len(body) > MAX_SAVE_BODY:
            return _error(413, "request body too large")
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise ConfigError(f"malformed JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("save takes a JSON object of render parameters")
        params = _params(list(data.items()), VIEW_PARAMS | EDIT_PARAMS)
        session = viewer.session(params.get("result"))
        spec, edit = FrameSpec.from_params(params), Edit.from_params(params)
        other = viewer.other(session, edit)

        def work() -> dict:
            with session.lock:
                return session.save(spec, edit, other)

        return JSONResponse(await run_in_threadpool(work), status_code=201)

    @_json_errors
    async def result_file(request: Request) -> Response:
        session = viewer.session(request.path_params["result"])
        root = session.directory.resolve()
        target = (root / request.path_params["path"]).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            return _error(404, "no such file in this result")
        return FileResponse(target, headers={"Cache-Control": "no-store"})

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, exc.detail)

    app = Starlette(
        debug=False,
        routes=[
            Route("/", index),
            Route("/api/results", results),
            Route("/api/render", render),
            Route("/api/mesh", mesh),
            Route("/api/save", save, methods=["POST"]),
            Route("/files/{result}/{path:path}", result_file),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=[HOST, "localhost"])],
        exception_handlers={HTTPException: http_error},
    )
    app.state.debug = debug
    app.state.viewer = viewer
    app.state.order = order
    return app


# --- the running server ----------------------------------------------------------------------------


class ViewerServer:
    """A viewer being served on ``127.0.0.1`` from a background thread.

    Attributes:
        viewer: the :class:`~eg3d_invert.viewer.Viewer` it serves.
        url: ``http://127.0.0.1:PORT/``.
    """

    def __init__(self, viewer: Viewer, sock: socket.socket, *, debug: bool = False, log_level: str = "warning"):
        import uvicorn

        self.viewer = viewer
        self.app = create_app(viewer, debug=debug)
        self.host, self.port = sock.getsockname()[:2]
        config = uvicorn.Config(self.app, log_level=log_level, access_log=debug, lifespan="off",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        # Waiting is done on an Event, not on Thread.join: a Ctrl-C that lands inside join() can
        # leave CPython believing the thread has ended (and the socket would be closed under it).
        self._stopped = threading.Event()

        def run() -> None:
            try:
                self._server.run(sockets=[sock])
            finally:
                self._stopped.set()

        self._thread = threading.Thread(target=run, name="eg3d-invert-viewer", daemon=True)
        self._sock = sock
        self._thread.start()
        while not self._server.started:
            if self._stopped.is_set():
                sock.close()
                raise PortError(f"the viewer did not start on {self.host}:{self.port}")
            time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def running(self) -> bool:
        return not self._stopped.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stops (or ``timeout`` seconds); True if it stopped."""
        return self._stopped.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and close the socket (open connections get up to 2 s to finish)."""
        self._server.should_exit = True
        if self._stopped.wait(timeout):
            self._thread.join(timeout)
            self._sock.close()

    def open_browser(self) -> bool:
        """Open :attr:`url` in the default browser; False if there is none."""
        return webbrowser.open(self.url)

    def __enter__(self) -> "ViewerServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ViewerServer(url={self.url!r}, results={list(self.viewer.sessions)})"


def bind(port: int = 0) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 (``port=0``: any free port).

    Raises:
        PortError: the port is in use or not allowed.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"port must be an integer in [0, 65535], got {port!r}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        hint = " (choose another with --port, or --port 0 for any free one)" if port else ""
        raise PortError(f"cannot listen on {HOST}:{port}: {exc.strerror or exc}{hint}") from None
    return sock


def serve(directories: Sequence[str | Path], *, port: int = 0, device: str = "cpu", base=None,
          settings: LiveSettings | None = None, sefa_cache: str | Path | None = "default", debug: bool = False,
          on_load: Callable[[Path], None] | None = None) -> ViewerServer:
    """Load result folders and serve the viewer on ``http://127.0.0.1:PORT/`` in the background.

    Args:
        directories: result folders (``OUT/NAME`` of ``eg3d-invert``).
        port: TCP port on 127.0.0.1; 0 picks a free one (see ``.url``). Nothing else is ever
            listened on.
        device, base, settings, sefa_cache, on_load: as :meth:`Viewer.load`.
        debug: access log, and tracebacks of internal errors instead of JSON 500s.
    Returns:
        The running :class:`ViewerServer` (``.url``, ``.stop()``, ``.wait()``; a context manager).
    Raises:
        PortError: the port cannot be listened on (checked before anything is loaded).
        CheckpointError: a folder is not a result or its base checkpoint is missing.
    """
    sock = bind(port)
    try:
        viewer = Viewer.load(directories, device=device, base=base, settings=settings, sefa_cache=sefa_cache,
                             on_load=on_load)
        return ViewerServer(viewer, sock, debug=debug, log_level="info" if debug else "warning")
    except BaseException:
        sock.close()
        raise


__all__ = ["serve", "bind", "create_app", "ViewerServer", "RequestOrder", "PortError", "HOST", "DEFAULT_PORT"]
