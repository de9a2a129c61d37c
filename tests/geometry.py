"""Geometry metrics for tests and benchmarks (not part of the package's API)."""

from __future__ import annotations

import math

import numpy as np


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Symmetric Chamfer distance between two point sets ``(Na, 3)``, ``(Nb, 3)``.

    Returns ``(mean, max)``: the mean of the two directed mean nearest-neighbour distances, and
    the Hausdorff distance, in the points' units.
    """
    from scipy.spatial import cKDTree

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return (0.0, 0.0) if len(a) == len(b) else (math.inf, math.inf)
    dab = cKDTree(b).query(a, workers=-1)[0]
    dba = cKDTree(a).query(b, workers=-1)[0]
    return float((dab.mean() + dba.mean()) / 2), float(max(dab.max(), dba.max()))
