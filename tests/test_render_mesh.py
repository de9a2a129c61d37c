"""Marching-cubes meshes: official conventions, coarse-to-fine == dense, colours, export."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import trimesh
from skimage.measure import marching_cubes

from eg3d_invert.render import EmptyMeshError, Scene, extract_mesh, save_mesh
from eg3d_invert.render import lattice as L
from eg3d_invert.render import mesh as M

from .geometry import chamfer_distance

from .test_render import tiny_a_scene

# tiny_A's random density barely reaches the official level 10 (a few voxels); level 4 gives a
# non-trivial surface (about 1% of the box inside, hundreds of components) to test on.
LEVEL = 4.0


@pytest.fixture(scope="module")
def scene() -> Scene:
    return tiny_a_scene()


@functools.lru_cache(maxsize=None)
def _small_mesh() -> trimesh.Trimesh:
    return extract_mesh(tiny_a_scene(), 32, LEVEL)


def _sorted_rows(v):
    v = np.round(np.asarray(v, dtype=np.float64), 4)
    return v[np.lexsort(v.T[::-1])]


# --- conventions (analytic fields, no generator) ------------------------------------------------


def test_official_constants():
    assert L.trim_width(512) == 60 and L.trim_width(256) == 30 and L.trim_width(8) == 0
    np.testing.assert_allclose(L.lattice_to_world([[0, 0, 0], [63, 63, 63]], 64, 1.0), [[-0.5] * 3, [0.5] * 3])


def _blob(center, radius=0.08, peak=30.0):
    c = torch.tensor(center, dtype=torch.float64)

    def density(p):
        return (peak * (1 - (p.double() - c).norm(dim=1) / radius)).float()
    return density


def test_mesh_is_in_world_frame_and_matches_the_official_ply_frame():
    """A blob at world (0.2, 0.1, -0.15): our vertices sit there; the official script's pipeline
    (flip axis 0, trim, transpose (2,1,0), marching cubes in voxel units) gives the same surface
    once mapped back with official_ply_to_world."""
    N, center = 48, (0.2, 0.1, -0.15)
    volume = L.dense_density(_blob(center), N)
    verts, faces = M._march(volume, 10.0, None)
    world = L.lattice_to_world(verts, N, 1.0)
    np.testing.assert_allclose(world.mean(0), center, atol=0.01)
    official = np.transpose(np.flip(volume, 0), (2, 1, 0))
    v_off, f_off, _, _ = marching_cubes(np.ascontiguousarray(official), 10.0)
    back = M.official_ply_to_world(v_off, N)
    assert chamfer_distance(back, world)[1] < 1e-5
    np.testing.assert_allclose(M.world_to_official_ply(back, N), v_off, atol=1e-4)
    assert trimesh.Trimesh(world, faces, process=False).volume > 0  # ours: outward winding (trimesh convention)
    assert trimesh.Trimesh(v_off, f_off, process=False).volume < 0  # the official PLY is wound inward


def test_trimmed_border_is_never_evaluated_and_caps_the_surface():
    N = 40
    pad = L.trim_width(N)
    asked = []

    def everywhere_dense(p):
        asked.append(p)
        return torch.full((p.shape[0],), 50.0)

    volume, offset, _, stats = L.sparse_density(everywhere_dense, N, 10.0, coarse_stride=4)
    pts = torch.cat(asked)
    inner = L.lattice_to_world([pad, N - 1 - pad], N, 1.0)
    assert float(pts.min()) >= inner[0] - 1e-6 and float(pts.max()) <= inner[1] + 1e-6
    assert offset == pad - 1 and volume.shape == (N - 2 * offset,) * 3
    verts, faces = M._march(volume, 10.0, None)
    world = L.lattice_to_world(verts + offset, N, 1.0)
    # The surface is the trimmed cube's boundary, between the last live and the first trimmed point.
    assert world.max() < L.lattice_to_world(N - pad, N, 1.0) and world.min() > L.lattice_to_world(pad - 1, N, 1.0)


@pytest.mark.parametrize("stride", [2, 4, 8])
def test_sparse_equals_dense_on_analytic_fields(stride):
    """A big blob, and a blob smaller than a coarse cell reached only through a tube ~1 voxel
    thick: the fix-up follows the tube out of the band and finds the small blob."""
    def density(p):
        p = p.double()
        a = 30 * (1 - (p - torch.tensor([-0.15, 0.0, 0.0], dtype=torch.float64)).norm(dim=1) / 0.2)
        b = 30 * (1 - (p - torch.tensor([0.2, 0.05, 0.0], dtype=torch.float64)).norm(dim=1) / 0.06)
        tube = 30 * (1 - (p[:, 1:] - torch.tensor([0.02, 0.0], dtype=torch.float64)).norm(dim=1) / 0.012)
        tube = torch.where(p[:, 0].abs() < 0.2, tube, torch.full_like(tube, -50))
        return torch.maximum(torch.maximum(a, b), tube).float()

    N = 72
    dense = L.dense_density(density, N)
    vd, fd = M._march(dense, 10.0, None)
    sparse, off, mask, stats = L.sparse_density(density, N, 10.0, coarse_stride=stride, guard=0.0)
    vs, fs = M._march(sparse, 10.0, mask)
    assert len(vs) == len(vd) and len(fs) == len(fd)
    np.testing.assert_allclose(_sorted_rows(vs + off), _sorted_rows(vd), atol=1e-3)
    assert stats.fraction < 0.5


def test_guard_catches_a_bump_between_coarse_corners():
    """A bump that crosses the level only between the corners of its coarse cell, its nearest
    corner approaching the level: found thanks to the guard, missed without it. (A speck that
    leaves no trace at any corner cannot be found by any sampling scheme; see sparse_density.)"""
    N, stride = 65, 8
    corner = L.lattice_to_world(L.trim_width(N) - 1 + 3 * stride, N, 1.0)  # a coarse lattice point
    center = torch.tensor([corner + 0.035] * 3, dtype=torch.float64)

    def density(p):
        r = (p.double() - center).norm(dim=1)
        return (9.0 + 1.6 * torch.exp(-(r / 0.07) ** 2)).float()  # crosses 10 for r < 0.048

    vd, _ = M._march(L.dense_density(density, N), 10.0, None)
    vol, off, mask, _ = L.sparse_density(density, N, 10.0, coarse_stride=stride, guard=0.0)
    with pytest.raises(EmptyMeshError):
        M._march(vol, 10.0, mask)
    vol, off, mask, _ = L.sparse_density(density, N, 10.0, coarse_stride=stride, guard=1.0)
    vs, _ = M._march(vol, 10.0, mask)
    np.testing.assert_allclose(_sorted_rows(vs + off), _sorted_rows(vd), atol=1e-3)


# --- on the generator ---------------------------------------------------------------------------


def test_generator_mesh_nonempty_coloured_inside_the_box(scene):
    mesh = extract_mesh(scene, resolution=48, level=LEVEL)
    assert len(mesh.vertices) > 1000 and len(mesh.faces) > 1000
    colors = mesh.visual.vertex_colors
    assert colors.shape == (len(mesh.vertices), 4) and colors.dtype == np.uint8 and colors[:, :3].std() > 0
    half = scene.box_warp / 2
    assert np.all(np.abs(mesh.bounds) <= half)
    edge = L.lattice_to_world(L.trim_width(48) - 1, 48, 1.0)  # nothing beyond the trimmed border
    assert np.all(mesh.bounds[0] > edge) and np.all(mesh.bounds[1] < -edge)
    info = mesh.metadata["eg3d_invert"]
    assert info["level"] == LEVEL and info["method"] == "sparse" and info["resolution"] == 48


def test_generator_sparse_mesh_equals_dense_mesh(scene):
    N = 48
    dense = extract_mesh(scene, N, LEVEL, method="dense", colors=None)
    sparse = extract_mesh(scene, N, LEVEL, method="sparse", coarse_stride=4, colors=None)
    assert len(sparse.vertices) == len(dense.vertices) and len(sparse.faces) == len(dense.faces)
    voxel = scene.box_warp / (N - 1)
    mean, worst = chamfer_distance(sparse.vertices, dense.vertices)
    assert mean / voxel < 1e-4 and worst / voxel < 1e-3
    assert sparse.metadata["eg3d_invert"]["evaluated_points"] < N ** 3


def test_vertex_colour_modes(scene):
    mesh = _small_mesh()
    normals = mesh.vertex_normals
    inside = M.vertex_colors(scene, mesh.vertices, normals, mode="inside")
    surface = M.vertex_colors(scene, mesh.vertices, normals, mode="surface")
    ray = M.vertex_colors(scene, mesh.vertices, normals, mode="ray", ray_samples=8)
    assert inside.shape == surface.shape == ray.shape == (len(mesh.vertices), 4)
    assert (inside[:, 3] == 255).all() and not np.array_equal(inside, surface)
    with torch.no_grad():
        rgb = scene.generator.sample_planes(scene.planes, torch.from_numpy(mesh.vertices[None].astype(np.float32)))
    expected = np.clip(np.round(rgb["rgb"][0, :, :3].numpy() * 255), 0, 255)
    assert np.abs(surface[:, :3].astype(int) - expected).max() <= 1
    with pytest.raises(ValueError, match="colour mode"):
        M.vertex_colors(scene, mesh.vertices, normals, mode="texture")


@pytest.mark.parametrize("fmt", ["ply", "obj", "glb"])
def test_export_round_trip(scene, tmp_path, fmt):
    mesh = _small_mesh()
    path = save_mesh(mesh, tmp_path / f"mesh.{fmt}")
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.vertices) == len(mesh.vertices) and len(loaded.faces) == len(mesh.faces)
    np.testing.assert_allclose(loaded.vertices, mesh.vertices, atol=1e-5)
    np.testing.assert_array_equal(loaded.visual.vertex_colors[:, :3], mesh.visual.vertex_colors[:, :3])
    assert [p.name for p in tmp_path.iterdir()] == [f"mesh.{fmt}"]  # no temporary left behind


def test_errors(scene, tmp_path):
    with pytest.raises(EmptyMeshError, match="level"):
        extract_mesh(scene, 24, level=1e6)
    with pytest.raises(ValueError, match="method"):
        extract_mesh(scene, 24, LEVEL, method="octree")
    with pytest.raises(ValueError, match="power of two"):
        extract_mesh(scene, 24, LEVEL, coarse_stride=3)
    mesh = trimesh.creation.box()
    with pytest.raises(ValueError, match="format"):
        save_mesh(mesh, tmp_path / "mesh.stl")
    assert list(tmp_path.iterdir()) == []
