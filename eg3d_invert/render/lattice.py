"""Density lattices for marching cubes: the dense one, and a coarse-to-fine one with the same surface.

Generic over the density: any function of world points (:data:`DensityFn`) sampled on an
``N^3`` lattice spanning the cube ``[-box_warp/2, box_warp/2]^3`` (both faces included), indexed
``[i_x, i_y, i_z]``. Two choices follow the official ``gen_samples.py --shapes``, whose
numbers :mod:`eg3d_invert.render.mesh` reproduces: the lattice spacing ``box_warp / (N - 1)``
and the optional trimmed border of ``int(30 N / 256)`` points set to ``-1000``
(:func:`trim_width`, :data:`TRIM_VALUE`).

:func:`dense_density` evaluates every point (the reference); :func:`sparse_density` refines
only around the iso-surface and evaluates a few percent of the points for the same surface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from scipy import ndimage

#: The value the official script writes into the trimmed border.
TRIM_VALUE = -1000.0
#: ``density(points (M, 3) float32 world) -> raw sigma (M,) float32``.
DensityFn = Callable[[torch.Tensor], torch.Tensor]
#: ``progress(done, total)``.
Progress = Callable[[int, int], None]
#: Points per density call. Each call has a fixed cost (~0.1 s on CPU) and needs ~0.7 kB per
#: point of temporaries; half a million keeps both small.
DEFAULT_CHUNK = 1 << 19


def trim_width(resolution: int) -> int:
    """Border width in lattice points that the official script sets to -1000: ``int(30 N / 256)``."""
    return int(30 * resolution / 256)


def lattice_to_world(index: np.ndarray, resolution: int, box_warp: float) -> np.ndarray:
    """Lattice indices (any float/int array, last axis x, y, z) -> world coordinates (float64).

    Index ``i`` sits at ``-box_warp/2 + i * box_warp / (N - 1)`` on each axis.
    """
    return np.asarray(index, dtype=np.float64) * (box_warp / (resolution - 1)) - box_warp / 2


def _evaluate(density: DensityFn, index: tuple[np.ndarray, np.ndarray, np.ndarray], offset: int, resolution: int,
              box_warp: float, chunk: int) -> np.ndarray:
    """Density at lattice points given as index arrays (plus ``offset``) -> float32 values."""
    n = index[0].size
    out = np.empty(n, dtype=np.float32)
    for s in range(0, n, chunk):
        idx = np.stack([a[s:s + chunk] for a in index], axis=1) + offset
        pts = torch.from_numpy(lattice_to_world(idx, resolution, box_warp).astype(np.float32))
        out[s:s + chunk] = density(pts).float().cpu().numpy()
    return out


def _trim(volume: np.ndarray, pad: int) -> None:
    # Guard pad == 0: the official ``a[-0:] = v`` would overwrite the whole volume.
    if pad > 0:
        for axis in range(3):
            sl = [slice(None)] * 3
            sl[axis] = slice(0, pad)
            volume[tuple(sl)] = TRIM_VALUE
            sl[axis] = slice(volume.shape[axis] - pad, None)
            volume[tuple(sl)] = TRIM_VALUE


def dense_density(density: DensityFn, resolution: int, box_warp: float = 1.0, *, trim: bool = True,
                  chunk: int = DEFAULT_CHUNK, progress: Progress | None = None) -> np.ndarray:
    """The full ``(N, N, N)`` float32 density lattice, indexed ``[i_x, i_y, i_z]``, border trimmed.

    The reference for :func:`sparse_density`: every lattice point is evaluated (slab by slab, so
    memory stays at the output array plus one chunk).
    """
    N = int(resolution)
    if N < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    volume = np.empty((N, N, N), dtype=np.float32)
    per_slab = max(1, chunk // (N * N))
    j, k = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    for start in range(0, N, per_slab):
        stop = min(N, start + per_slab)
        i = np.repeat(np.arange(start, stop), N * N)
        jj, kk = np.tile(j.ravel(), stop - start), np.tile(k.ravel(), stop - start)
        volume[start:stop] = _evaluate(density, (i, jj, kk), 0, N, box_warp, chunk).reshape(stop - start, N, N)
        if progress is not None:
            progress(stop, N)
    if trim:
        _trim(volume, trim_width(N))
    return volume


# --- coarse to fine -----------------------------------------------------------------------------


def _sign_change_cells(inside: np.ndarray) -> np.ndarray:
    """Cells ``(a-1, b-1, c-1)`` of a point lattice ``(a, b, c)`` whose 8 corners disagree."""
    any_, all_ = inside[:-1] | inside[1:], inside[:-1] & inside[1:]
    any_, all_ = any_[:, :-1] | any_[:, 1:], all_[:, :-1] & all_[:, 1:]
    any_, all_ = any_[:, :, :-1] | any_[:, :, 1:], all_[:, :, :-1] & all_[:, :, 1:]
    return any_ & ~all_


def _cell_min_max(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min and max over the 8 corners of every cell of a point lattice."""
    lo, hi = np.minimum(values[:-1], values[1:]), np.maximum(values[:-1], values[1:])
    lo, hi = np.minimum(lo[:, :-1], lo[:, 1:]), np.maximum(hi[:, :-1], hi[:, 1:])
    return np.minimum(lo[:, :, :-1], lo[:, :, 1:]), np.maximum(hi[:, :, :-1], hi[:, :, 1:])


def _cell_max(values: np.ndarray) -> np.ndarray:
    """Max over the 8 corners of every cell of a point lattice."""
    m = np.maximum(values[:-1], values[1:])
    m = np.maximum(m[:, :-1], m[:, 1:])
    return np.maximum(m[:, :, :-1], m[:, :, 1:])


def _flag_cells(values: np.ndarray, level: float, guard: float, margin: int) -> np.ndarray:
    """Cells of a point lattice worth refining: those crossing ``level`` (dilated by ``margin``)
    and, with the guard, those that might cross it between their corners.

    The guard estimates how far the field can stray from the trilinear interpolation of a
    cell's corners: for a twice-differentiable field the error is at most
    ``(1/8) sum_axes max |f_aa| s^2``, and ``|f_aa| s^2`` is estimated by the second difference
    ``|f(i-1) - 2 f(i) + f(i+1)|`` at the cell's corners. A cell whose corners all lie on one side
    of the level, but closer to it than ``guard`` times that bound, is flagged. On a linear field
    the bound is zero (nothing is added); near a bump or a ridge that approaches the level it
    grows.
    """
    flags = _dilate(_sign_change_cells(values > level), margin)
    if guard > 0:
        bound = np.zeros(tuple(n - 1 for n in values.shape), dtype=np.float32)
        for axis in range(3):
            e = np.moveaxis(values, axis, 0)
            d2 = np.zeros_like(e)
            d2[1:-1] = np.abs(e[:-2] - 2 * e[1:-1] + e[2:])
            bound += _cell_max(np.moveaxis(d2, 0, axis))
        lo, hi = _cell_min_max(values)
        gap = np.maximum(lo - level, level - hi)  # > 0: all corners on one side
        flags |= (gap > 0) & (gap < guard * bound / 8)
    return flags


def _cells_to_points(cells: np.ndarray) -> np.ndarray:
    """Flags of cells ``(L, L, L)`` of stride ``s`` -> flags of the ``(2L+1)^3`` points of stride
    ``s/2`` that lie in (or on the boundary of) a flagged cell. Separable: one axis at a time."""
    out = cells
    for axis in range(3):
        f = np.moveaxis(out, axis, 0)
        pts = np.zeros((2 * f.shape[0] + 1,) + f.shape[1:], dtype=bool)
        pts[1::2] = f
        pts[0:-1:2] |= f
        pts[2::2] |= f
        out = np.moveaxis(pts, 0, axis)
    return np.ascontiguousarray(out)


_CORNER = np.zeros((3, 3, 3), dtype=bool)
_CORNER[::2, ::2, ::2] = True


def _escaped_cells(fine: np.ndarray, exact: np.ndarray, level: float, cells: np.ndarray,
                   batch: int = 1 << 16) -> np.ndarray:
    """The candidate (un-flagged) coarse cells ``cells (K, 3)`` that would contain a crossing
    fine cell; returns a ``(K',3)`` subset.

    A coarse cell ``(i, j, k)`` covers the fine points ``[2i, 2i+2]^3`` (27 of them). Its
    non-exact points will be filled with copies of its corners, so its fine cells cross the
    level iff its corners and its exact points are not all on the same side. Only cells next to
    flagged ones can have exact non-corner points, so only those need to be candidates.
    """
    out = []
    r = np.arange(3)
    for s in range(0, len(cells), batch):
        c = cells[s:s + batch]
        a = (2 * c[:, 0])[:, None, None, None] + r[None, :, None, None]
        b = (2 * c[:, 1])[:, None, None, None] + r[None, None, :, None]
        d = (2 * c[:, 2])[:, None, None, None] + r[None, None, None, :]
        inside = fine[a, b, d] > level                               # (K, 3, 3, 3)
        relevant = exact[a, b, d] | _CORNER
        mixed = (inside & relevant).any(axis=(1, 2, 3)) & (~inside & relevant).any(axis=(1, 2, 3))
        out.append(c[mixed])
    return np.concatenate(out) if out else np.zeros((0, 3), dtype=np.int64)


def _unique_rows(idx: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Unique in-range rows of an ``(K, 3)`` index array (sorted in C order)."""
    ok = np.all((idx >= 0) & (idx < np.asarray(shape)), axis=1)
    lin = np.unique(np.ravel_multi_index(tuple(idx[ok].T), shape))
    return np.stack(np.unravel_index(lin, shape), axis=1)


def _neighbour_cells(cells: np.ndarray, radius: int, shape: tuple[int, int, int]) -> np.ndarray:
    """All cells within ``radius`` (Chebyshev) of ``cells (K, 3)``, unique and in range."""
    r = np.arange(-radius, radius + 1)
    offsets = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    return _unique_rows((cells[:, None, :] + offsets[None]).reshape(-1, 3), shape)


def _cell_point_rows(cells: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The unique fine points ``(P, 3)`` of the coarse cells ``cells (K, 3)`` (27 per cell)."""
    r = np.arange(3)
    offsets = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    return _unique_rows((2 * cells[:, None, :] + offsets[None]).reshape(-1, 3), shape)


def _dilate(cells: np.ndarray, margin: int) -> np.ndarray:
    if margin <= 0:
        return cells
    return ndimage.maximum_filter(cells.view(np.uint8), size=2 * margin + 1, mode="constant", cval=0).view(bool)


def _fill_nearest_corner(fine: np.ndarray, coarse: np.ndarray, where: np.ndarray, slab: int = 16) -> None:
    """``fine[a, b, c] = coarse[a//2, b//2, c//2]`` where ``where`` (in place, slab by slab).

    For a point inside one un-flagged coarse cell, ``a//2`` etc. name a corner of that cell, so
    the filled value has the cell's (uniform) side of the iso-level.
    """
    half = np.arange(fine.shape[1]) // 2
    half_c = np.arange(fine.shape[2]) // 2
    for a0 in range(0, fine.shape[0], slab):
        a1 = min(fine.shape[0], a0 + slab)
        w = where[a0:a1]
        if w.any():
            up = coarse[np.arange(a0, a1) // 2][:, half][:, :, half_c]
            np.copyto(fine[a0:a1], up, where=w)


@dataclass
class SparseStats:
    """How much of the lattice :func:`sparse_density` evaluated, per level."""

    resolution: int
    coarse_stride: int
    margin: int
    guard: float
    dense_points: int = 0      # N^3, what the dense lattice evaluates
    evaluated_points: int = 0  # what was evaluated
    levels: list = field(default_factory=list)  # per stride: flagged cells, new points, fix-up rounds

    @property
    def fraction(self) -> float:
        return self.evaluated_points / max(1, self.dense_points)


def default_coarse_stride(resolution: int) -> int:
    """A power of two giving a coarse lattice of about 64^3 (1 below 128: plain dense)."""
    return max(1, 2 ** int(math.floor(math.log2(max(resolution, 1) / 64)))) if resolution >= 128 else 1


def _replicate_outward(V: np.ndarray, lo: int, hi: int) -> None:
    """In place: every point outside the box ``[lo, hi]^3`` takes the value of the nearest box
    point (faces extruded outward, then edges and corners), axis by axis."""
    for axis in range(3):
        v = np.moveaxis(V, axis, 0)
        v[:lo] = v[lo]
        v[hi + 1:] = v[hi]


def _set_outside(V: np.ndarray, lo: int, hi: int, value) -> None:
    """In place: every point outside the box ``[lo, hi]^3`` gets ``value``."""
    for axis in range(3):
        v = np.moveaxis(V, axis, 0)
        v[:lo] = value
        v[hi + 1:] = value


def sparse_density(density: DensityFn, resolution: int, level: float, box_warp: float = 1.0, *,
                   trim: bool = True, coarse_stride: int | None = None, margin: int = 1, guard: float = 4.0,
                   chunk: int = DEFAULT_CHUNK,
                   progress: Progress | None = None) -> tuple[np.ndarray, int, np.ndarray | None, SparseStats]:
    """Coarse-to-fine density lattice with the same iso-surface as :func:`dense_density`.

    Algorithm (octree-style refinement on a dense array):

    1. Only the untrimmed interior ("live box") is evaluated. Its six boundary layers are
       evaluated first, at full resolution, and extruded outward over the trimmed border, so
       the refinement sees no artificial -1000 step (which would sit between coarse lattice
       points and hide the caps). The work array is cropped to the live box plus one trimmed
       layer per face and padded to a multiple of ``S``.
    2. Evaluate the lattice every ``S = coarse_stride`` points.
    3. For ``s = S, S/2, ..., 2``: flag the stride-``s`` cells whose corners lie on both sides of
       ``level``, dilated by ``margin`` cells, plus the cells the guard suspects (below); then
       evaluate every stride-``s/2`` point of the flagged cells that is not known exactly yet
       (including their corners if those were fills).
    4. Fix-up: un-flagged cells next to flagged ones whose corners and exactly known points no
       longer lie on one side (the surface leaves the band, or a corner changed side when it
       was evaluated) are flagged (with margin) and step 3 repeats for them, until none is
       left. A surface connected to a detected one is thus followed wherever it goes, however
       thin. These rounds work on index lists, so they cost what they touch.
    5. Points of un-flagged cells are filled with a copy of one of their cell's corners (all
       on one side of the level), so they cannot create a surface.
    6. The trimmed border is reset to -1000.

    At the finest level every cell that crosses the level has 8 exactly known corners, so
    marching cubes gives the dense lattice's triangles there, and none elsewhere. What it can
    miss is a surface component that touches no flagged cell: an isolated speck (or hole)
    between the corners of a cell whose corners all stay on one side. The guard flags such a
    cell when its nearest corner is within ``guard`` times the trilinear-interpolation error
    bound ``(1/8) sum_axes max|second difference|`` of the level (zero on a linear field, large
    near bumps and ridges). On a smooth field (the ffhq512-128 configuration) nothing is
    missed even without the guard; on the reference checkpoints' noisy fields (thousands of
    specks a few voxels wide) ``guard=4`` misses few or none (see benchmarks/mesh.py).

    Args:
        density: ``points (M, 3) -> sigma (M,)``, e.g. :func:`plane_density`.
        resolution, level, box_warp, trim: as :func:`dense_density` / :func:`extract_mesh`.
        coarse_stride: ``S``, a power of two (default :func:`default_coarse_stride`).
        margin: dilation of the crossing cells, in cells of each level.
        guard: the near-level factor (0 disables the guard).
        chunk: points per density call.

    Returns:
        ``volume (n, n, n)`` float32, the lattice restricted to ``[offset, offset + n)`` on each
        axis (same ``[i_x, i_y, i_z]`` indexing as :func:`dense_density`); ``offset``; a mask
        of the points worth marching (``None`` = all); statistics.
    """
    N = int(resolution)
    if N < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    S = default_coarse_stride(N) if coarse_stride is None else int(coarse_stride)
    if S < 1 or S & (S - 1):
        raise ValueError(f"coarse_stride must be a power of two, got {coarse_stride}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    pad = trim_width(N) if trim else 0
    # Work array: live box [pad, N-1-pad] plus one trimmed layer per face when trimming.
    offset = pad - 1 if pad > 0 else 0
    n = N - 2 * offset
    lo, hi = (1, n - 2) if pad > 0 else (0, n - 1)     # the live box in work coordinates
    stats = SparseStats(N, S, margin, guard, dense_points=N ** 3)
    if hi < lo:
        return np.full((N, N, N), TRIM_VALUE, np.float32), 0, None, stats
    m = -(-(n - 1) // S) * S + 1                        # lattice size, a multiple of S plus one
    V = np.full((m, m, m), TRIM_VALUE, dtype=np.float32)
    # exact: the value is known exactly (evaluated, or outside the live box, where it is the
    # extrusion of the exactly evaluated boundary layers during the refinement); otherwise it
    # is a fill copied from a cell corner.
    exact = np.ones((m, m, m), dtype=bool)
    exact[lo:hi + 1, lo:hi + 1, lo:hi + 1] = False

    def evaluate_at(view: np.ndarray, exact_view: np.ndarray, idx: tuple, stride: int) -> int:
        if idx[0].size:
            view[idx] = _evaluate(density, tuple(a * stride for a in idx), offset, N, box_warp, chunk)
            exact_view[idx] = True
        return int(idx[0].size)

    def evaluate(view: np.ndarray, exact_view: np.ndarray, mask: np.ndarray, stride: int) -> int:
        # Slab by slab, so the index arrays stay near one chunk whatever the mask; slabs are
        # batched into chunk-sized density calls (each call has a fixed cost).
        count, slab, batch = 0, max(1, chunk // (mask.shape[1] * mask.shape[2])), []

        def flush():
            nonlocal count, batch
            if batch:
                idx = tuple(np.concatenate([b[k] for b in batch]) for k in range(3))
                count += evaluate_at(view, exact_view, idx, stride)
                batch = []

        pending = 0
        for a0 in range(0, mask.shape[0], slab):
            idx = np.nonzero(mask[a0:a0 + slab])
            if idx[0].size:
                batch.append((idx[0] + a0, idx[1], idx[2]))
                pending += idx[0].size
            if pending >= chunk:
                flush()
                pending = 0
        flush()
        return count

    # 1. The live box's boundary layers, then extruded outward.
    shell = np.zeros((m, m, m), dtype=bool)
    for axis in range(3):
        sh = np.moveaxis(shell, axis, 0)
        sh[lo] = True
        sh[hi] = True
    shell &= ~exact
    boundary = evaluate(V, exact, shell, 1)
    del shell
    _replicate_outward(V, lo, hi)
    # 2. The coarse lattice.
    n_steps = int(math.log2(S)) + 1
    first = evaluate(V[::S, ::S, ::S], exact[::S, ::S, ::S], ~exact[::S, ::S, ::S], S)
    stats.evaluated_points += boundary + first
    stats.levels.append({"stride": S, "new_points": first, "boundary_points": boundary})
    if progress is not None:
        progress(1, n_steps)
    march_mask = None
    s = S
    while s > 1:
        h = s // 2
        coarse, fine, exact_h = V[::s, ::s, ::s], V[::h, ::h, ::h], exact[::h, ::h, ::h]
        flags = _flag_cells(coarse, level, guard, margin)
        # First round on whole arrays (the flagged band is large), then fix-up rounds on index
        # lists, so their cost follows the few cells they touch, not the lattice.
        points = _cells_to_points(flags)
        new_total = evaluate(fine, exact_h, points & ~exact_h, h)  # incl. corners that were fills
        candidates = np.argwhere(_dilate(flags, 1) & ~flags)
        rounds = 1
        while True:
            escaped = _escaped_cells(fine, exact_h, level, candidates)
            if len(escaped) == 0:
                break
            rounds += 1
            pending = _neighbour_cells(escaped, margin, flags.shape)
            pending = pending[~flags[tuple(pending.T)]]
            flags[tuple(pending.T)] = True
            pts = _cell_point_rows(pending, fine.shape)
            points[tuple(pts.T)] = True
            pts = pts[~exact_h[tuple(pts.T)]]
            new_total += evaluate_at(fine, exact_h, tuple(pts.T), h)
            candidates = _neighbour_cells(pending, 1, flags.shape)
            candidates = candidates[~flags[tuple(candidates.T)]]
        _fill_nearest_corner(fine, coarse, ~exact_h)
        stats.evaluated_points += new_total
        stats.levels.append({"stride": h, "flagged_cells": int(flags.sum()), "new_points": new_total,
                             "rounds": rounds})
        if h == 1:
            march_mask = points
        s = h
        if progress is not None:
            progress(n_steps - int(math.log2(s)), n_steps)
    # 6. Back to the official trimmed values; the caps between the boundary layers and the
    # trimmed border have exact corners on both sides, so they are marched too.
    _set_outside(V, lo, hi, TRIM_VALUE)
    if march_mask is not None:
        band = np.zeros_like(march_mask)
        for axis in range(3):
            b = np.moveaxis(band, axis, 0)
            b[max(lo - 1, 0):lo + 1] = True
            b[hi:hi + 2] = True
        march_mask |= band
        march_mask = march_mask[:n, :n, :n]
    return np.ascontiguousarray(V[:n, :n, :n]), offset, march_mask, stats


__all__ = ["dense_density", "sparse_density", "SparseStats", "lattice_to_world", "trim_width", "default_coarse_stride",
           "DensityFn", "TRIM_VALUE", "DEFAULT_CHUNK"]
