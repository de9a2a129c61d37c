"""Marching-cubes meshes of the EG3D density, as ``gen_samples.py --shapes`` makes them, but fast.

What is reproduced from the official script (``gen_samples.py`` + ``shape_utils.py``):

* the density is the raw decoder output ``sigma`` (before the softplus), sampled on an ``N^3``
  lattice spanning the tri-plane cube ``[-box_warp/2, box_warp/2]^3`` with spacing
  ``box_warp / (N - 1)`` (both faces included);
* a border of ``int(30 N / 256)`` lattice points on every face is overwritten with ``-1000``
  ("trim the border"), which cuts the shoulders/neck and the hair off flat;
* scikit-image marching cubes at iso-level ``10`` (the README's "optimal level, usually between
  2 and 20"); the surface encloses ``sigma > level``.

What is different, on purpose:

* **Frame and units.** The official PLY is in voxel units of a flipped, transposed array: its
  vertex ``(X, Y, Z) = (i_z, i_y, N - 1 - i_x)``, i.e. the face looks toward +X. Ours are in
  **world units in EG3D's frame** (+y up, the face looks toward +z, the subject's left is +x,
  the same frame as the cameras), so the mesh lines up with the camera poses and renders.
  :func:`official_ply_to_world` / :func:`world_to_official_ply` convert.
* **Exact lattice.** The official ``create_samples`` computes two of the three lattice indices
  with float division instead of floor (``(i / N) % N``), which shears its lattice by up to one
  voxel (and loses float32 precision above 2^24 points); we sample the exact lattice.
* **Planes once.** The official loop calls ``G.sample`` per 1M-point chunk, which re-runs the
  mapping and the StyleGAN backbone every time (~135 times at 512^3); we sample the scene's
  tri-planes.
* **Coarse to fine** (``method='sparse'``, the default): see
  :func:`~eg3d_invert.render.lattice.sparse_density`. It produces the same surface as the dense
  lattice while evaluating a few percent of its points.
* **Winding and colours.** Faces are wound counter-clockwise seen from outside (trimesh's
  convention: positive volume, outward face normals; the official PLY is wound the other way),
  and vertices carry colours (see :func:`vertex_colors`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import trimesh
from skimage.measure import marching_cubes

from .._io import atomic_path
from ..errors import EmptyMeshError
from ..options import DEFAULT_MESH_LEVEL, DEFAULT_MESH_RESOLUTION, MESH_FORMATS
from ..generator import plane_table, rendering
from .lattice import (DEFAULT_CHUNK, TRIM_VALUE, DensityFn, Progress, dense_density, lattice_to_world, sparse_density,
                      trim_width)
from .scene import Scene

#: The official iso-level, 10 (see :mod:`eg3d_invert.options`).
DEFAULT_LEVEL = DEFAULT_MESH_LEVEL


def official_ply_to_world(vertices: np.ndarray, resolution: int, box_warp: float = 1.0) -> np.ndarray:
    """Vertices of an official ``gen_samples.py --shape-format .ply`` mesh -> our world frame.

    The official vertex ``(X, Y, Z)`` is ``(i_z, i_y, N - 1 - i_x)`` in voxel units (the array
    was flipped on axis 0 and transposed (2, 1, 0) before marching cubes).
    """
    v = np.asarray(vertices, dtype=np.float64)
    index = np.stack([(resolution - 1) - v[:, 2], v[:, 1], v[:, 0]], axis=1)
    return lattice_to_world(index, resolution, box_warp)


def world_to_official_ply(vertices: np.ndarray, resolution: int, box_warp: float = 1.0) -> np.ndarray:
    """Inverse of :func:`official_ply_to_world`: world vertices -> the official PLY's voxel frame."""
    i = (np.asarray(vertices, dtype=np.float64) + box_warp / 2) * ((resolution - 1) / box_warp)
    return np.stack([i[:, 2], i[:, 1], (resolution - 1) - i[:, 0]], axis=1)


def plane_density(scene: Scene, chunk: int = DEFAULT_CHUNK) -> DensityFn:
    """The scene's raw density as a function of world points, evaluated in chunks without grad."""
    G, planes = scene.generator, scene.planes
    with torch.no_grad():
        table = plane_table(planes)  # built once: meshing queries the planes many times

    def density(points: torch.Tensor) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for s in range(0, points.shape[0], chunk):
                pts = points[s:s + chunk].to(device=planes.device, dtype=torch.float32)[None]
                out.append(G.sample_planes(planes, pts, need_rgb=False, table=table)["sigma"][0, :, 0])
        return torch.cat(out) if out else torch.zeros(0, device=planes.device)

    return density


# --- marching cubes, colours, export ------------------------------------------------------------


def _march(volume: np.ndarray, level: float, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    inside = volume > level
    if not inside.any() or inside.all():
        lo, hi = float(volume[volume > TRIM_VALUE].min(initial=np.inf)), float(volume.max())
        raise EmptyMeshError(f"no surface at density level {level:g}: the untrimmed density spans "
                             f"[{lo:.3g}, {hi:.3g}]; choose a level inside that range", level, (lo, hi))
    # 'ascent' keeps skimage's own winding, which for an [x, y, z]-indexed array is counter-
    # clockwise seen from the low-density side (outside): trimesh's outward convention.
    verts, faces, _, _ = marching_cubes(volume, level, gradient_direction="ascent", mask=mask)
    return verts.astype(np.float64), faces.astype(np.int64)


def vertex_colors(scene: Scene, vertices: np.ndarray, normals: np.ndarray, *, mode: str = "inside",
                  offset: float | None = None, ray_samples: int = 16, chunk: int = 1 << 18) -> np.ndarray:
    """RGBA uint8 ``(V, 4)`` colours from the decoder's colour features (channels 0-2, in [0, 1]).

    Those are the raw (pre-super-resolution) colours that ``image_raw`` composites; the final
    image's super-resolution sharpens them but keeps the hues.

    Modes:
        ``'surface'``: the features at the vertex itself (on the level-10 shell, where the
            density is still rising and colours are often a darker, semi-transparent mix);
        ``'inside'`` (default): at ``vertex - offset * normal``, ``offset`` (world units)
            defaulting to one tri-plane texel ``box_warp / 256``, the scale of the features, so
            the colour comes from the opaque material just under the shell;
        ``'ray'``: what a camera looking straight at the surface would see: ``ray_samples``
            points from ``2 offset`` outside to ``6 offset`` inside along the normal,
            volume-composited with the renderer's weights and normalised by their sum
            (``ray_samples`` times the cost).

    ``normals (V, 3)`` must point outward (toward lower density).
    """
    G, planes = scene.generator, scene.planes
    off = scene.box_warp / 256 if offset is None else float(offset)
    v = np.asarray(vertices, dtype=np.float64)
    nrm = np.nan_to_num(np.asarray(normals, dtype=np.float64))
    if mode == "surface":
        ts = np.zeros(1)
    elif mode == "inside":
        ts = np.array([off])
    elif mode == "ray":
        ts = np.linspace(-2 * off, 6 * off, int(ray_samples))
    else:
        raise ValueError(f"unknown colour mode {mode!r} (surface, inside, ray)")
    k = len(ts)
    out = np.empty((len(v), 3), dtype=np.float64)
    per = max(1, chunk // k)
    with torch.no_grad():
        for s in range(0, len(v), per):
            pts = v[s:s + per, None, :] - ts[None, :, None] * nrm[s:s + per, None, :]  # inward = -normal
            q = torch.from_numpy(pts.reshape(1, -1, 3).astype(np.float32)).to(planes.device)
            res = G.sample_planes(planes, q, need_rgb=True)
            rgb = res["rgb"][0, :, :3].reshape(-1, k, 3).double()
            if k == 1:
                out[s:s + per] = rgb[:, 0].cpu().numpy()
                continue
            sigma = res["sigma"][0, :, 0].reshape(-1, k).double()
            depth = torch.from_numpy(ts).to(sigma).expand_as(sigma)
            w = rendering.interval_weights(sigma, depth, G.rendering_kwargs.get("clamp_mode", "softplus"))
            coef = rendering.sample_coefficients(w)
            col = (coef[..., None] * rgb).sum(1) / coef.sum(1, keepdim=True).clamp_min(1e-10)
            out[s:s + per] = col.cpu().numpy()
    rgba = np.empty((len(v), 4), dtype=np.uint8)
    rgba[:, :3] = np.clip(np.round(out * 255), 0, 255).astype(np.uint8)
    rgba[:, 3] = 255
    return rgba


def extract_mesh(scene: Scene, resolution: int = DEFAULT_MESH_RESOLUTION, level: float = DEFAULT_LEVEL, *,
                 method: str = "sparse",
                 trim: bool = True, coarse_stride: int | None = None, margin: int = 1, guard: float = 4.0,
                 colors: str | None = "inside",
                 color_offset: float | None = None, chunk: int = DEFAULT_CHUNK,
                 progress: Progress | None = None) -> trimesh.Trimesh:
    """Marching-cubes mesh of the scene's density (see the module docstring for the conventions).

    Args:
        resolution: lattice points per axis ``N`` (official default 512; 256 is visually close
            and 8x cheaper).
        level: iso-level of the raw density (official 10).
        method: ``'sparse'`` (coarse to fine, :func:`~eg3d_invert.render.lattice.sparse_density`)
            or ``'dense'`` (every lattice point, the reference).
        trim: trim the border like the official script.
        coarse_stride, margin, guard: coarse-to-fine settings
            (:func:`~eg3d_invert.render.lattice.sparse_density`; defaults:
            a ~64^3 coarse lattice, margin 1 cell, guard 4).
        colors: ``'inside'``, ``'surface'``, ``'ray'`` (see :func:`vertex_colors`) or None.
        color_offset: the colour query offset in world units (default one texel, box/256).
        progress: ``progress(done, total)`` over the refinement levels plus colouring.
    Returns:
        ``trimesh.Trimesh`` in world units (EG3D frame), outward winding, vertex colours
        (RGBA uint8) unless ``colors=None``; ``mesh.metadata['eg3d_invert']`` records the
        settings and the work done.
    Raises:
        EmptyMeshError: the density never crosses ``level``.
    """
    N = int(resolution)
    box = scene.box_warp
    t0 = time.perf_counter()
    density = plane_density(scene, chunk)
    if method == "dense":
        volume, offset, mask = dense_density(density, N, box, trim=trim, chunk=chunk), 0, None
        info = {"evaluated_points": N ** 3}
    elif method == "sparse":
        volume, offset, mask, stats = sparse_density(density, N, level, box, trim=trim, coarse_stride=coarse_stride,
                                                     margin=margin, guard=guard, chunk=chunk, progress=progress)
        info = {"evaluated_points": stats.evaluated_points, "coarse_stride": stats.coarse_stride, "margin": margin,
                "guard": guard, "levels": stats.levels}
    else:
        raise ValueError(f"unknown method {method!r} (sparse, dense)")
    t_density = time.perf_counter() - t0
    verts, faces = _march(volume, level, mask)
    del volume, mask
    vertices = lattice_to_world(verts + offset, N, box)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    t_march = time.perf_counter() - t0 - t_density
    if colors is not None:
        mesh.visual.vertex_colors = vertex_colors(scene, vertices, mesh.vertex_normals, mode=colors,
                                                  offset=color_offset)
    mesh.metadata["eg3d_invert"] = {
        "resolution": N, "level": float(level), "method": method, "trim": trim, "trim_width": trim_width(N) if trim else 0,
        "box_warp": box, "frame": "EG3D world: +y up, face toward +z, subject's left +x; world units",
        "colors": colors, "dense_points": N ** 3, **info,
        "seconds": {"density": t_density, "marching_cubes": t_march,
                    "colors": time.perf_counter() - t0 - t_density - t_march},
    }
    if progress is not None:
        progress(1, 1)
    return mesh


def save_mesh(mesh: trimesh.Trimesh, path: str | Path, file_type: str | None = None) -> Path:
    """Export ``mesh`` as PLY (binary), OBJ or GLB, atomically; the format follows the suffix.

    All three keep the per-vertex colours (PLY/GLB as RGBA, OBJ as ``v x y z r g b``).
    """
    path = Path(path)
    fmt = (file_type or path.suffix.lstrip(".")).lower()
    if fmt not in MESH_FORMATS:
        raise ValueError(f"unsupported mesh format {fmt!r}; use one of {', '.join(MESH_FORMATS)}")
    with atomic_path(path) as tmp:
        if fmt == "obj":
            data = trimesh.exchange.obj.export_obj(mesh, include_normals=True, include_color=True,
                                                   include_texture=False, write_texture=False, mtl_name=None)
            tmp.write_text(data, encoding="utf-8")
        else:
            mesh.export(tmp, file_type=fmt)
    return path


__all__ = ["extract_mesh", "save_mesh", "vertex_colors", "plane_density", "official_ply_to_world",
           "world_to_official_ply", "EmptyMeshError", "DEFAULT_LEVEL", "MESH_FORMATS"]
