"""A tiny threaded HTTP file server on 127.0.0.1 for download tests (never the real internet).

It serves byte strings by path, honours ``Range: bytes=N-`` (206, or 416 past the end), and
can misbehave on purpose: drop the connection after N body bytes for the next K requests,
ignore Range (always 200 with the whole file), or trickle chunks slowly. Every request is
recorded with the body bytes actually written, so tests can prove what was (re)sent.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Request:
    path: str
    range: str | None
    status: int
    sent: int = 0


@dataclass
class FileServer:
    files: dict[str, bytes]
    ignore_range: bool = False
    drop_after: int | None = None  # body bytes written before the connection is cut
    drops_left: int = 0  # how many more requests get cut
    chunk_delay: float = 0.0  # seconds between 64 KiB writes
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01},
                                        daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    @property
    def bytes_sent(self) -> int:
        with self._lock:
            return sum(r.sent for r in self.requests)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _reply_empty(self, status: int, headers: dict[str, str], rec: Request) -> None:
        rec.status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):  # noqa: N802 - http.server naming
        srv: FileServer = self.server.owner
        path = self.path.split("?", 1)[0]
        rng = self.headers.get("Range")
        rec = Request(path=path, range=rng, status=0)
        with srv._lock:
            srv.requests.append(rec)
        data = srv.files.get(path)
        if data is None:
            return self._reply_empty(404, {}, rec)

        start, status = 0, 200
        if rng and not srv.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            assert m, f"test server only understands open-ended ranges, got {rng!r}"
            start = int(m.group(1))
            if start >= len(data):
                return self._reply_empty(416, {"Content-Range": f"bytes */{len(data)}"}, rec)
            status = 206
        body = data[start:]
        rec.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "none" if srv.ignore_range else "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()

        limit, drop = len(body), False
        with srv._lock:
            if srv.drops_left > 0 and srv.drop_after is not None:
                srv.drops_left -= 1
                limit, drop = min(limit, srv.drop_after), True
        try:
            step = 1 << 16
            for i in range(0, limit, step):
                chunk = body[i:min(i + step, limit)]
                self.wfile.write(chunk)
                with srv._lock:
                    rec.sent += len(chunk)
                if srv.chunk_delay:
                    time.sleep(srv.chunk_delay)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def file_server():
    """A running :class:`FileServer` with no files; tests fill ``server.files``."""
    srv = FileServer(files={})
    yield srv
    srv.close()


def closed_port() -> int:
    """A localhost port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
