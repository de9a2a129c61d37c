"""Small file-system helpers shared by every writer: outputs appear whole or not at all, names
never collide, and a file's hash is computed once."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


#: Marks the temporary files of this package (``.NAME.XXXXXXXX.partial.SUFFIX``), so that a run
#: can tell what a killed run left behind from anything else (:func:`remove_temporaries`).
TEMP_MARKER = ".partial"
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}" + re.escape(TEMP_MARKER) + r"(\.[A-Za-z0-9]+)?$")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the same directory (so the rename is atomic on POSIX and
    Windows), is hidden and marked with :data:`TEMP_MARKER`, and keeps the target's suffix (so
    writers that look at the extension, like PIL, imageio or trimesh, pick the right format).
    On error or interruption it is removed and ``path`` is left untouched; only a killed
    process leaves it behind, for :func:`remove_temporaries`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.",
                               suffix=TEMP_MARKER + (suffix if suffix is not None else path.suffix), dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def ensure_writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create the folder ``path`` if needed and prove that a file can be created in it.

    Called before long work whose results go there, so that a folder that cannot be written
    (a file in the way, no permission, a read-only disk) costs seconds, not hours. The probe
    creates and removes one temporary file; permission bits are not trusted (root ignores them,
    and some file systems refuse writes they allow).

    Raises:
        OutputError: one line naming the folder and the reason.
    """
    from .errors import OutputError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=TEMP_MARKER, dir=path)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise OutputError(f"{path}: cannot write the {what}: it is a file, not a folder") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the {what}: {exc.strerror or exc}") from None
    return path


def remove_temporaries(directory: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Delete the temporary files that :func:`atomic_path` left in ``directory`` (and, if
    ``recursive``, its subfolders) when its process was killed (``kill -9``, power loss): only
    hidden files named like them. Called when a run goes back to a folder, which it then owns.
    Returns the removed paths."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = directory.rglob(".*") if recursive else directory.glob(".*")
    removed = []
    for p in found:
        if _TEMP_NAME.match(p.name) and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def unique_name(stem: str, taken: Callable[[str], bool]) -> str:
    """``stem``, else ``stem_2``, ``stem_3``, ...: the first name that ``taken`` does not refuse."""
    k = 1
    while True:
        name = stem if k == 1 else f"{stem}_{k}"
        if not taken(name):
            return name
        k += 1


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) for the process (checkpoints are
    hundreds of MB and are hashed by the loader, the reports and resume checks)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]
