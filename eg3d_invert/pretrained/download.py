"""Resumable, verified, process-safe downloads of checkpoint files, and name/path/URL resolution.

A download goes to ``<dest>.part`` and is renamed onto ``dest`` only once it is complete and
its size and SHA-256 (when given) match, so ``dest`` either does not exist or is whole. An
interrupted download keeps its ``.part`` file; the next call asks the server for the rest
with an HTTP ``Range`` request. A lock file next to ``dest`` makes a second process (or
thread) wait for the first instead of writing into the same ``.part`` file; once it gets the
lock it finds ``dest`` in place and returns without downloading again.

The released checkpoints are ~370 MB each, which is why resuming matters: a dropped
connection at 90 % should not cost the first 90 %.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterator, Protocol

import requests

from .._io import ensure_writable_dir, file_sha256
from ..errors import (
    CheckpointError,
    ChecksumMismatchError,
    DownloadError,
    MissingWeightsError,
    OutputError,
    UnknownModelError,
)
from .cache import cached_path, url_cached_path
from .registry import NGC_CATALOG_URL, ModelInfo, find_model, find_model_by_url, get_model_info

#: ``(connect, read)`` timeouts in seconds for every request. The read timeout is the longest
#: silence tolerated between two chunks, not a limit on the whole download.
DEFAULT_TIMEOUT = (10.0, 60.0)
#: Bytes per read (and per progress update). Small enough that little is lost when a connection
#: breaks: urllib3 drops a partially filled read on error, and resuming re-fetches it.
CHUNK_SIZE = 1 << 18

#: Progress callback: ``callback(bytes_done, bytes_total_or_None)``. Called once when the
#: transfer starts (``bytes_done`` may be > 0 when resuming) and after every chunk.
ProgressCallback = Callable[[int, "int | None"], None]

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)


# --- progress ------------------------------------------------------------------------------------


class _Reporter(Protocol):
    def start(self, done: int, total: int | None) -> None: ...
    def update(self, done: int) -> None: ...
    def close(self) -> None: ...


class _NullReporter:
    def start(self, done: int, total: int | None) -> None:
        pass

    def update(self, done: int) -> None:
        pass

    def close(self) -> None:
        pass


class _CallbackReporter:
    def __init__(self, fn: ProgressCallback):
        self.fn, self.total = fn, None

    def start(self, done: int, total: int | None) -> None:
        self.total = total
        self.fn(done, total)

    def update(self, done: int) -> None:
        self.fn(done, self.total)

    def close(self) -> None:
        pass


class _RichReporter:
    """A rich progress bar on stderr: bytes, speed and time left."""

    def __init__(self, label: str, console):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=console)
        self.label, self.task = label, None

    def start(self, done: int, total: int | None) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=total, completed=done)
        else:  # a retry or a restart: same bar, new position
            self.progress.update(self.task, total=total, completed=done)

    def update(self, done: int) -> None:
        self.progress.update(self.task, completed=done)

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()


def _make_reporter(progress: bool | ProgressCallback, label: str) -> _Reporter:
    if callable(progress):
        return _CallbackReporter(progress)
    if not progress:
        return _NullReporter()
    from rich.console import Console

    console = Console(stderr=True)
    # Logs and CI output should not fill with redrawn bars: only draw on a terminal.
    return _RichReporter(label, console) if console.is_terminal else _NullReporter()


# --- locking -------------------------------------------------------------------------------------


def _try_lock(fd: int) -> bool:
    """Take an exclusive, non-blocking lock on ``fd``; False if someone else holds it.

    POSIX ``flock`` (and Windows ``msvcrt.locking``) locks are dropped by the kernel when the
    holder dies, so a crashed download never leaves a stale lock behind.
    """
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unlock(fd: int) -> None:
    if os.name == "nt":  # pragma: no cover
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def _download_lock(lock_path: Path, dest: Path, timeout: float, poll: float = 0.1) -> Iterator[None]:
    """Hold ``lock_path`` exclusively for the duration of the block.

    On POSIX the holder deletes the lock file before releasing it, so nothing is left in the
    cache. That is only safe because a waiter that wins the lock then checks that the file it
    locked is still the one at ``lock_path``; if it locked a deleted file it tries again.
    On Windows an open file cannot be deleted, so the (empty) lock file stays.
    """
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        if _try_lock(fd):
            if os.name == "nt":  # pragma: no cover
                break
            try:
                current = os.stat(lock_path)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(os.fstat(fd), current):
                break
            _unlock(fd)  # we locked a file the previous holder already removed
        os.close(fd)
        if time.monotonic() > deadline:
            raise DownloadError(f"another process has been downloading {dest.name} for more than {timeout:.0f} s "
                                f"(lock file {lock_path}); try again when it has finished")
        time.sleep(poll)
    try:
        yield
    finally:
        if os.name != "nt":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)
        _unlock(fd)
        os.close(fd)


# --- the transfer --------------------------------------------------------------------------------


class _Interrupted(Exception):
    """The connection broke mid-body; the ``.part`` file holds what arrived. Internal."""

    def __init__(self, received: int, total: int | None, reason: str):
        super().__init__(reason)
        self.received, self.total, self.reason = received, total, reason


class _Restart(Exception):
    """The ``.part`` file cannot be continued (server disagrees about it); start from zero. Internal."""


def _short_reason(exc: BaseException) -> str:
    """One short phrase for a requests/urllib3 exception ("Connection refused", "timed out")."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:  # the interesting OSError is buried in args/__cause__/__context__ chains
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        if "NameResolution" in type(e).__name__ or "getaddrinfo" in str(e) or "Name or service" in str(e):
            return "host name could not be resolved"
        stack.extend(x for x in (e.__cause__, e.__context__, getattr(e, "reason", None)) if isinstance(x, BaseException))
        stack.extend(a for a in e.args if isinstance(a, BaseException))
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def _manual_hint(dest: Path) -> str:
    return f"download the file yourself and save it as {dest}"


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(first_byte, total)`` from a Content-Range header; None where absent or ``*``."""
    m = _CONTENT_RANGE_RE.match(value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return start, total


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fetch(session: requests.Session, url: str, part: Path, dest: Path, expected_size: int | None,
           timeout, chunk_size: int, reporter: _Reporter) -> None:
    """One HTTP request that continues (or starts) ``part``. Returns when the body is complete.

    Raises ``_Interrupted`` (resumable), ``_Restart`` (drop the .part and call again) or
    DownloadError (give up).
    """
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        raise _Restart  # a stale .part from some other file
    if expected_size is not None and offset == expected_size:
        reporter.start(offset, expected_size)
        return  # complete already (e.g. killed between the last byte and the rename)

    # identity: byte offsets must refer to the file, not to a gzip stream of it.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True)
    except requests.RequestException as exc:
        raise DownloadError(f"cannot download {url}: {_short_reason(exc)}; if offline, "
                            f"{_manual_hint(dest)}") from None

    with resp:
        status = resp.status_code
        if status == 416:
            # Range not satisfiable: offset is at or past the end of the file.
            _, total = _parse_content_range(resp.headers.get("Content-Range"))
            if offset and total is not None and total == offset:
                reporter.start(offset, total)
                return  # the .part already holds every byte
            if offset:
                raise _Restart
            raise DownloadError(f"cannot download {url}: HTTP 416 without a Range request; {_manual_hint(dest)}")
        if status == 206:
            start, total = _parse_content_range(resp.headers.get("Content-Range"))
            if start != offset:
                raise _Restart  # not the range we asked for: cannot splice it in safely
            mode = "ab"
        elif status == 200:
            # Full body: either no Range was sent, or the server ignores Range. Either way the
            # .part is rewritten from the first byte rather than appended to.
            offset, mode = 0, "wb"
            total = int(resp.headers["Content-Length"]) if resp.headers.get("Content-Length", "").isdigit() else None
        else:
            reason = f"HTTP {status} {resp.reason or ''}".strip()
            raise DownloadError(f"cannot download {url}: {reason}; {_manual_hint(dest)}")

        if expected_size is not None and total is not None and total != expected_size:
            _unlink(part)
            raise ChecksumMismatchError(f"{url} is {total} bytes but {expected_size} were expected; "
                                        f"nothing was kept")

        received = offset
        reporter.start(received, total)
        chunks = resp.iter_content(chunk_size)
        try:
            f = open(part, mode)
        except OSError as exc:
            raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from None
        with f:
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except requests.RequestException as exc:  # dropped connection, read timeout, ...
                    raise _Interrupted(received, total, _short_reason(exc)) from None
                try:
                    f.write(chunk)
                except OSError as exc:  # disk full: keep the .part, the user can free space and resume
                    raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from None
                received += len(chunk)
                reporter.update(received)
            f.flush()
            os.fsync(f.fileno())  # the rename must never publish data still in the page cache only
        if total is not None and received < total:
            raise _Interrupted(received, total, "connection closed early")
        if total is not None and received > total:
            _unlink(part)
            raise DownloadError(f"{url} sent {received} bytes after announcing {total}; nothing was kept")


def download(url: str, dest: str | os.PathLike, expected_sha256: str | None = None,
             expected_size: int | None = None, progress: bool | ProgressCallback = True, *,
             timeout: float | tuple[float, float] = DEFAULT_TIMEOUT, retries: int = 3,
             retry_wait: float = 1.0, lock_timeout: float = 3600.0, chunk_size: int = CHUNK_SIZE,
             overwrite: bool = False, session: requests.Session | None = None) -> Path:
    """Download ``url`` to ``dest``; resumable, verified, and safe against concurrent callers.

    Args:
        url: http(s) URL. Redirects are followed (NGC redirects to a storage host).
        dest: final file path; its folder is created. Work happens in ``<dest>.part`` and
            ``<dest>.lock`` next to it.
        expected_sha256: lowercase hex SHA-256 the file must have, or None to skip the check.
        expected_size: exact size in bytes, or None. Checked against the server's announced
            length before the body is read, and against the file at the end.
        progress: True for a rich bar on stderr when stderr is a terminal (quiet otherwise),
            False for silence, or a :data:`ProgressCallback`.
        timeout: seconds, as ``requests`` takes it: one number or ``(connect, read)``.
        retries: how many times a connection that breaks mid-body is resumed within this call
            (each resume asks only for the missing bytes). 0 gives up at once, keeping the
            ``.part`` for a later call.
        retry_wait: seconds before the n-th retry is ``n * retry_wait``.
        lock_timeout: seconds to wait for another process downloading the same ``dest``.
        chunk_size: bytes per read.
        overwrite: download even if ``dest`` exists. Otherwise an existing ``dest`` is returned
            untouched (it only ever appears by the final rename, or because a user put it there).
        session: a ``requests.Session`` to use (connection pooling, proxies, auth headers).

    Returns:
        ``Path(dest)``.

    Raises:
        ChecksumMismatchError: wrong size or hash (message gives expected and actual); the
            ``.part`` is deleted and ``dest`` is not created.
        DownloadError: offline, HTTP error, interrupted after all retries (the ``.part`` is kept
            for resuming), or the disk is not writable. Messages are one line and name the URL
            and the path where the file can be put by hand.
    """
    dest = Path(dest)
    if expected_sha256 is not None:
        expected_sha256 = expected_sha256.strip().lower()
        if not _SHA256_RE.match(expected_sha256):
            raise ValueError(f"expected_sha256 must be 64 hex digits, got {expected_sha256!r}")
    if expected_size is not None and expected_size < 0:
        raise ValueError(f"expected_size must be >= 0, got {expected_size}")
    try:
        ensure_writable_dir(dest.parent, "download folder")
    except OutputError as exc:
        raise DownloadError(f"{exc}; set EG3D_INVERT_HOME to a writable folder, or download {url} yourself "
                            f"and pass the file's path") from None
    part = dest.with_name(dest.name + ".part")
    lock = dest.with_name(dest.name + ".lock")

    with _download_lock(lock, dest, lock_timeout):
        if dest.is_file() and not overwrite:
            return dest  # another process finished it while we waited for the lock
        own_session = session is None
        session = session or requests.Session()
        reporter = _make_reporter(progress, dest.name)
        try:
            attempt = restarts = 0
            while True:
                try:
                    _fetch(session, url, part, dest, expected_size, timeout, chunk_size, reporter)
                    break
                except _Restart:
                    # The server and the .part disagree (416 past the end, a different range).
                    # Start over once or twice; a server that keeps disagreeing is broken.
                    _unlink(part)
                    restarts += 1
                    if restarts > 2:
                        raise DownloadError(f"cannot download {url}: the server keeps answering with the "
                                            f"wrong byte range; {_manual_hint(dest)}") from None
                except _Interrupted as exc:
                    if attempt >= retries:
                        of = f" of {exc.total}" if exc.total is not None else ""
                        raise DownloadError(
                            f"download of {url} interrupted after {exc.received}{of} bytes ({exc.reason}); "
                            f"run again to resume from {part}, or {_manual_hint(dest)}") from None
                    attempt += 1
                    time.sleep(retry_wait * attempt)
        finally:
            reporter.close()
            if own_session:
                session.close()

        size = part.stat().st_size
        if expected_size is not None and size != expected_size:
            _unlink(part)
            raise ChecksumMismatchError(f"{url}: got {size} bytes, expected {expected_size}; nothing was kept")
        if expected_sha256 is not None:
            actual = file_sha256(part)
            if actual != expected_sha256:
                _unlink(part)
                raise ChecksumMismatchError(f"{url}: SHA-256 mismatch, expected {expected_sha256}, got {actual}; "
                                            f"nothing was kept")
        # Not _io.atomic_path: the temporary name must be fixed (<dest>.part) so a later call
        # can find and resume it. os.replace is atomic within one folder on POSIX and Windows.
        os.replace(part, dest)
    return dest


_download = download  # resolve_checkpoint's ``download`` flag shadows the function name


# --- resolution ----------------------------------------------------------------------------------

def _resolve_registered(info: ModelInfo, download: bool, progress, verify: bool) -> Path:
    dest = cached_path(info.name)
    if dest.is_file():
        return dest
    if not download:
        raise MissingWeightsError(f"checkpoint {info.name} is not in the cache; run `eg3d-invert models "
                                  f"--download {info.name}`, or download {info.url} yourself and save it "
                                  f"as {dest}")
    try:
        return _download(info.url, dest, expected_sha256=info.sha256 if verify else None,
                         expected_size=info.size_bytes if verify else None, progress=progress)
    except ChecksumMismatchError as exc:
        if info.sha256_from_nvidia:
            raise
        raise ChecksumMismatchError(f"{exc}. The expected values come from a {info.sha256_source}; NGC's file "
                                    f"may differ from that mirror: if you trust the download, retry with "
                                    f"verify=False (CLI: --no-verify)") from None
    except DownloadError as exc:
        if info.on_ngc:
            raise
        raise DownloadError(f"{exc} ({info.name} is probably not on NGC: see {NGC_CATALOG_URL})") from None


def resolve_checkpoint(name_or_path: str | os.PathLike, download: bool = True, *,
                       progress: bool | ProgressCallback = True, verify: bool = True) -> Path:
    """Turn what a user typed into a local checkpoint file, downloading it if needed.

    - an existing file path: returned as given (``~`` expanded), never copied;
    - a registry name (``ffhq512-128``, ``.pkl`` optional): the cached file, downloaded from
      NGC into the cache first if missing;
    - an ``http(s)://`` URL: downloaded into the cache under its file name (see
      :func:`~eg3d_invert.pretrained.cache.url_cached_path`); a URL that is a registry entry's
      URL is treated as that entry, so its size and hash are checked.

    Args:
        download: if False, a missing cached file raises MissingWeightsError instead.
        progress: as for :func:`download`.
        verify: check the registry's size and SHA-256. Those come from third-party mirrors
            (see :class:`ModelInfo`); ``verify=False`` accepts whatever NGC serves.

    Raises:
        CheckpointError: a path that does not exist, or a folder.
        UnknownModelError: neither a file, a URL nor a known name (lists the known names).
        MissingWeightsError: ``download=False`` and not cached.
        DownloadError: see :func:`download`.
    """
    if isinstance(name_or_path, os.PathLike):
        path = Path(name_or_path).expanduser()
        if path.is_file():
            return path
        raise CheckpointError(f"checkpoint file not found: {path}" if not path.is_dir()
                              else f"{path} is a folder, not a checkpoint file")

    text = str(name_or_path).strip()
    if re.match(r"^https?://", text, re.IGNORECASE):
        info = find_model_by_url(text)
        if info is not None:
            return _resolve_registered(info, download, progress, verify)
        dest = url_cached_path(text)
        if dest.is_file():
            return dest
        if not download:
            raise MissingWeightsError(f"{text} is not in the cache; download it yourself and save it as {dest}")
        return _download(text, dest, progress=progress)
    if "://" in text:
        raise CheckpointError(f"only http(s) URLs can be downloaded, got {text}")

    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    info = find_model(text)
    if info is not None:
        return _resolve_registered(info, download, progress, verify)
    if os.sep in text or "/" in text:  # clearly meant as a path: a name suggestion would not help
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        get_model_info(text)
    except UnknownModelError as exc:
        raise UnknownModelError(f"{text!r} is not an existing file or an http(s) URL, and {exc}") from None
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = ["download", "resolve_checkpoint", "ProgressCallback", "DEFAULT_TIMEOUT"]
