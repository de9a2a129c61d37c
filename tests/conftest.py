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
REFERENCE = SHARED / "reference"
EVALDATA = SHARED / "evaldata"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


@functools.lru_cache(maxsize=None)
def reference_npz(name: str) -> dict[str, np.ndarray]:
    with np.load(require(REFERENCE / f"{name}_ref.npz")) as f:
        return {k: f[k] for k in f.files}
