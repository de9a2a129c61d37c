"""Where downloaded checkpoints are kept.

Layout under :func:`cache_dir`::

    checkpoints/<name>.pkl                 released checkpoints, by registry name
    checkpoints/url/<host>/<file name>     anything downloaded from another URL

URL downloads get their own folder per host so that a fine-tuned ``ffhq512-128.pkl`` from
somewhere else can never be mistaken for the released file of the same name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import platformdirs

from ..errors import DownloadError
from .registry import get_model_info

#: Environment variable that overrides the cache location (like TORCH_HOME for torch.hub).
ENV_HOME = "EG3D_INVERT_HOME"


def cache_dir() -> Path:
    """Root of the cache: ``$EG3D_INVERT_HOME`` if set and non-empty, else the platform cache dir.

    The platform directory is ``platformdirs.user_cache_dir("eg3d-invert")`` (for example
    ``~/.cache/eg3d-invert`` on Linux). Read on every call, so changing the variable at run
    time takes effect. Nothing is created here.
    """
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser()
    return Path(platformdirs.user_cache_dir("eg3d-invert"))


def checkpoints_dir() -> Path:
    """Folder holding the released checkpoints."""
    return cache_dir() / "checkpoints"


def cached_path(name: str) -> Path:
    """Where the released checkpoint ``name`` is (or would be) cached. The file may not exist.

    Raises:
        UnknownModelError: ``name`` is not a registry name.
    """
    return checkpoints_dir() / get_model_info(name).filename


def is_cached(name: str) -> bool:
    """True if the released checkpoint ``name`` is in the cache.

    Files only ever appear there by an atomic rename after a complete (and, where a hash is
    known, verified) download, or because a user put them there, so existence is the test.
    """
    return cached_path(name).is_file()


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]")


def url_filename(url: str) -> str:
    """The file name a URL downloads to: the last path segment, or the ``path=`` query value.

    NGC's alternative form ``.../files?redirect=true&path=ffhq512-128.pkl`` carries the name
    in the query. Characters outside ``[A-Za-z0-9._+-]`` become ``_`` so the name is safe on
    every file system.

    Raises:
        DownloadError: no usable file name in the URL.
    """
    parts = urlsplit(url)
    candidates = [unquote(parts.path.rstrip("/").rsplit("/", 1)[-1])]
    candidates = parse_qs(parts.query).get("path", []) + candidates
    for cand in candidates:
        cand = _SAFE_NAME.sub("_", cand.replace("\\", "/").rsplit("/", 1)[-1])
        if cand.strip("._"):
            return cand
    raise DownloadError(f"cannot tell a file name from the URL {url}; download it yourself and pass the path")


def url_cached_path(url: str) -> Path:
    """Where a checkpoint downloaded from an arbitrary http(s) ``url`` is cached."""
    host = _SAFE_NAME.sub("_", urlsplit(url).netloc) or "unknown-host"
    return checkpoints_dir() / "url" / host / url_filename(url)
