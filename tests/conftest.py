"""Shared test fixtures. Reference data is read from ../shared (never copied into the project)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EG3D_INVERT_SHARED", REPO.parent / "shared"))
#: Set (to 1) by ``.ci/run``: missing shared data then fails the tests that need it instead of
#: skipping them, so CI cannot pass without having checked the reference outputs.
REQUIRE_ENV = "EG3D_INVERT_REQUIRE_REFERENCE"
REFERENCE = SHARED / "reference"
EVALDATA = SHARED / "evaldata"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """A cache folder of the test session's own (checkpoints, the time estimates' record), so
    runs neither read nor leave anything in the user's cache; tests that need another set it."""
    if "EG3D_INVERT_HOME" not in os.environ:
        os.environ["EG3D_INVERT_HOME"] = str(tmp_path_factory.mktemp("eg3d_invert_home"))
        yield
        os.environ.pop("EG3D_INVERT_HOME", None)
    else:
        yield


def require(path: Path) -> Path:
    """``path`` if it exists; else skip the test, or fail it when ``$EG3D_INVERT_REQUIRE_REFERENCE`` is set."""
    if not path.exists():
        if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
            pytest.fail(f"shared data not found: {path} (required: {REQUIRE_ENV} is set)", pytrace=False)
        pytest.skip(f"shared data not found: {path}")
    return path


@functools.lru_cache(maxsize=None)
def reference_npz(name: str) -> dict[str, np.ndarray]:
    with np.load(require(REFERENCE / f"{name}_ref.npz")) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture
def unwritable_dir(tmp_path):
    """An existing folder in which no file can be created: a read-only one, or for root (who
    ignores permission bits) /sys, which refuses new files to everyone."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    candidates = [locked, Path("/sys")]
    try:
        for d in candidates:
            try:
                (d / ".probe").write_bytes(b"")
                (d / ".probe").unlink()
            except OSError:
                yield d
                break
        else:
            pytest.fail("no folder that refuses new files is available on this machine")
    finally:
        locked.chmod(0o755)
