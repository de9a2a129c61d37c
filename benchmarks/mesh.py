"""Mesh extraction: the official ``gen_samples.py --shapes`` loop vs planes-once dense vs coarse-to-fine.

Usage:
    .venv/bin/python benchmarks/mesh.py                         # full (random weights) + tiny_C, 128 and 512
    .venv/bin/python benchmarks/mesh.py --configs tiny_C --resolutions 128 256 --official-max 256
    .venv/bin/python benchmarks/mesh.py --json results.json

Methods (each measurement in its own subprocess, so its peak RSS is its own):

* ``official``: what ``gen_samples.py --shapes`` does, rewritten here: the official lattice
  (``create_samples``, including its float-division shear), ``G.sample(chunk, dirs, z, c)`` per
  1,000,000-point chunk (mapping + StyleGAN backbone re-run for every chunk), flip on axis 0,
  border of ``int(30 N/256)`` set to -1000, transpose (2, 1, 0), scikit-image marching cubes; the
  vertices are mapped to world coordinates with ``official_ply_to_world``. Run up to
  ``--official-max`` (512^3 would take most of an hour on two shared cores); beyond it the time is
  **extrapolated per point** from the largest measured resolution (the loop's cost is linear in
  the number of points: ~1M points and one backbone pass per chunk), plus our measured dense
  marching-cubes time at that resolution.
* ``dense``: ``extract_mesh(method='dense')``: planes once, every lattice point evaluated. The
  reference surface for the Chamfer distances.
* ``sparse``: ``extract_mesh(method='sparse')`` (coarse to fine), with the guard on (default) and off.

Timings include computing the planes (ours) but not loading the model; colours are off (the
official mesh has none) except in the ``sparse+colors`` row. Chamfer distances are symmetric
mean nearest-vertex distances (and Hausdorff) against the dense mesh, in voxels. The machine load
(1-minute average) is printed before and after every measurement.

Which iso-level: the released checkpoints are not available offline, and random weights do not
make a head. ``full`` (ffhq512-128 configuration, random weights) has a smooth density in
[0.3, 2.2]: at level 10 there is no surface, so ``--level-full`` defaults to 1.0, where one big
component fills ~25 % of the box (about a head's share). ``tiny_C`` at the official level 10 is a
worst case: its perturbed decoder gives a noisy density with thousands of specks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("EG3D_INVERT_SHARED", REPO.parent / "shared")) / "reference"
OFFICIAL_CHUNK = 1_000_000


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build(config: str):
    import torch

    sys.path.insert(0, str(REPO))
    from eg3d_invert.camera import Camera
    from eg3d_invert.generator import TriPlaneGenerator
    from eg3d_invert.pretrained import load_generator
    from eg3d_invert.pretrained.official import FFHQ512_128_INIT_KWARGS

    torch.manual_seed(0)
    if config == "full":
        G = TriPlaneGenerator(**FFHQ512_128_INIT_KWARGS).eval().requires_grad_(False)
        G.neural_rendering_resolution = 128
    else:
        G = load_generator(REFERENCE / f"{config}.pkl")
    z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1))
    c = Camera.from_angles(0.0, 0.0).label  # the official conditioning camera (frontal)
    return G, z, c


def _official_lattice(N: int, cube: float):
    """The official ``create_samples`` lattice, (1, N^3, 3) float32, written from its description:
    x index slowest, z fastest; the y and x indices come from float division (``(i/N) % N``),
    not floor, so the lattice is sheared by up to one voxel (kept: this is what runs)."""
    import torch

    i = torch.arange(N ** 3)
    pts = torch.empty(N ** 3, 3)
    pts[:, 2] = (i % N).float()
    pts[:, 1] = (i.float() / N) % N
    pts[:, 0] = (i.float() / N / N) % N
    return (pts * (cube / (N - 1)) - cube / 2)[None]


def _measure(config: str, method: str, N: int, level: float, guard: float, threads: int, out: str) -> dict:
    import torch

    torch.set_num_threads(threads)
    from eg3d_invert.render import Scene, extract_mesh
    from eg3d_invert.render import lattice as L
    from eg3d_invert.render import mesh as M

    G, z, c = _build(config)
    base_rss = _rss_mb()
    t0 = time.perf_counter()
    info: dict = {}
    if method == "official":
        with torch.no_grad():
            pts = _official_lattice(N, G.rendering_kwargs["box_warp"])
            sig = torch.empty(pts.shape[1])
            for head in range(0, pts.shape[1], OFFICIAL_CHUNK):
                torch.manual_seed(0)
                sig[head:head + OFFICIAL_CHUNK] = G.sample(pts[:, head:head + OFFICIAL_CHUNK], None, z, c,
                                                           noise_mode="const")["sigma"][0, :, 0]
        t_density = time.perf_counter() - t0
        vol = np.flip(sig.reshape(N, N, N).numpy(), 0).copy()
        del pts, sig
        L._trim(vol, L.trim_width(N))  # the official border: int(30 N / 256) points set to -1000
        from skimage.measure import marching_cubes
        verts, faces, _, _ = marching_cubes(np.ascontiguousarray(np.transpose(vol, (2, 1, 0))), level)
        vertices = M.official_ply_to_world(verts, N, G.rendering_kwargs["box_warp"])
        n_faces = len(faces)
        info = {"seconds_density": t_density, "seconds_mc": time.perf_counter() - t0 - t_density,
                "evaluated_points": N ** 3, "chunks": math.ceil(N ** 3 / OFFICIAL_CHUNK)}
    else:
        with torch.no_grad():
            scene = Scene.from_ws(G, G.mapping(z, c))
        t_planes = time.perf_counter() - t0
        colors = "inside" if method == "sparse+colors" else None
        mesh = extract_mesh(scene, N, level, method="dense" if method == "dense" else "sparse", guard=guard,
                            colors=colors)
        meta = mesh.metadata["eg3d_invert"]
        vertices, n_faces = np.asarray(mesh.vertices), len(mesh.faces)
        info = {"seconds_planes": t_planes, "seconds_density": meta["seconds"]["density"],
                "seconds_mc": meta["seconds"]["marching_cubes"], "seconds_colors": meta["seconds"]["colors"],
                "evaluated_points": meta["evaluated_points"], "levels": meta.get("levels")}
    seconds = time.perf_counter() - t0
    np.save(out, vertices.astype(np.float32))
    return {"config": config, "method": method, "resolution": N, "level": level, "guard": guard,
            "seconds": seconds, "vertices": int(len(vertices)), "faces": int(n_faces),
            "peak_rss_mb": _rss_mb(), "model_rss_mb": base_rss, "threads": torch.get_num_threads(), **info}


def _run(args, config, method, N, level, guard, tmp) -> dict | None:
    out = str(Path(tmp) / f"{config}_{method}_{N}_{guard}.npy")
    cmd = [sys.executable, __file__, "--_one", config, method, str(N), str(level), str(guard), out,
           "--threads", str(args.threads)]
    load0 = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"{config} {method} {N}: FAILED\n{proc.stderr[-3000:]}", flush=True)
        return None
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["load_before"], r["load_after"], r["vertices_path"] = load0, os.getloadavg()[0], out
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["full", "tiny_C"])
    ap.add_argument("--resolutions", nargs="+", type=int, default=[128, 512])
    ap.add_argument("--official-max", type=int, default=256, help="largest N for the official loop (rest extrapolated)")
    ap.add_argument("--official-extra", nargs="*", type=int, default=[256],
                    help="extra N measured for the official loop only (the extrapolation base)")
    ap.add_argument("--level-full", type=float, default=1.0)
    ap.add_argument("--level", type=float, default=10.0, help="iso-level for the reference checkpoints")
    ap.add_argument("--guards", nargs="+", type=float, default=[4.0, 0.0],
                    help="guard factors for the sparse runs (the first is also used with colours)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--_one", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._one:
        config, method, N, level, guard, out = args._one
        print(json.dumps(_measure(config, method, int(N), float(level), float(guard), args.threads, out)))
        return

    import torch
    print(f"cpus {os.cpu_count()}, torch threads {args.threads}, torch {torch.__version__}, "
          f"load {os.getloadavg()}", flush=True)
    results = []
    tmp = tempfile.mkdtemp(prefix="eg3d_mesh_bench_")
    header = (f"{'config':7s} {'N':>4s} {'method':14s} {'seconds':>9s} {'density':>8s} {'MC':>6s} {'points':>12s}"
              f" {'%dense':>7s} {'verts':>9s} {'RSS MB':>7s} {'base':>6s} {'chamfer':>9s} {'hausd.':>7s} {'load':>9s}")
    for config in args.configs:
        level = args.level_full if config == "full" else args.level
        rows = {}
        official_ns = sorted(set([n for n in args.resolutions if n <= args.official_max] + list(args.official_extra)))
        for N in sorted(set(args.resolutions) | set(official_ns)):
            methods = []
            if N in official_ns:
                methods.append(("official", 0.0))
            if N in args.resolutions:
                methods += [("dense", 0.0)] + [("sparse", g) for g in args.guards] + [("sparse+colors", args.guards[0])]
            for method, guard in methods:
                r = _run(args, config, method, N, level, guard, tmp)
                if r is None:
                    continue
                rows[(N, method, guard)] = r
                results.append(r)
                print(f"  done {config} {N} {method} guard={guard}: {r['seconds']:.1f} s", flush=True)
        # Chamfer against the dense mesh of the same resolution, in voxels.
        sys.path.insert(0, str(REPO))
        from tests.geometry import chamfer_distance
        for (N, method, guard), r in rows.items():
            ref = rows.get((N, "dense", 0.0))
            if ref is not None and method != "dense":
                a, b = np.load(r["vertices_path"]), np.load(ref["vertices_path"])
                mean, worst = chamfer_distance(a, b)
                voxel = 1.0 / (N - 1)
                r["chamfer_vox"], r["hausdorff_vox"] = mean / voxel, worst / voxel
        # Official loop extrapolated per point to resolutions it was not run at.
        measured = [n for (n, m, _) in rows if m == "official"]
        if measured:
            base = rows[(max(measured), "official", 0.0)]
            per_point = base["seconds_density"] / base["evaluated_points"]
            for N in args.resolutions:
                if (N, "official", 0.0) not in rows and (N, "dense", 0.0) in rows:
                    est = per_point * N ** 3 + rows[(N, "dense", 0.0)]["seconds_mc"]
                    r = {"config": config, "method": "official (extrap.)", "resolution": N, "level": level,
                         "guard": 0.0, "seconds": est, "seconds_density": per_point * N ** 3,
                         "seconds_mc": rows[(N, "dense", 0.0)]["seconds_mc"], "evaluated_points": N ** 3,
                         "extrapolated_from": max(measured)}
                    rows[(N, "official (extrap.)", 0.0)] = r
                    results.append(r)
        print(f"\n{config} (level {level:g}):\n{header}")
        for key in sorted(rows, key=lambda k: (k[0], k[1], -k[2])):
            r = rows[key]
            name = r["method"] + ("" if r["method"] != "sparse" else f" g={r['guard']:g}")
            name = "official" if name == "official (extrap.)" else name
            if "extrapolated_from" in r:
                name += "*"
            pct = 100 * r["evaluated_points"] / r["resolution"] ** 3
            cham = f"{r['chamfer_vox']:9.2e}" if "chamfer_vox" in r else f"{'-':>9s}"
            haus = f"{r['hausdorff_vox']:7.2f}" if "hausdorff_vox" in r else f"{'-':>7s}"
            rss = (f"{r['peak_rss_mb']:7.0f} {r['model_rss_mb']:6.0f}" if "peak_rss_mb" in r
                   else f"{'-':>7s} {'-':>6s}")
            verts = f"{r['vertices']:9d}" if "vertices" in r else f"{'-':>9s}"
            load = f"{r['load_before']:.1f}/{r['load_after']:.1f}" if "load_before" in r else "-"
            print(f"{config:7s} {r['resolution']:4d} {name:14s} {r['seconds']:9.1f} {r['seconds_density']:8.1f}"
                  f" {r['seconds_mc']:6.1f} {r['evaluated_points']:12d} {pct:7.2f} {verts} {rss} {cham} {haus}"
                  f" {load:>9s}")
        for N in args.resolutions:
            off = rows.get((N, "official", 0.0)) or rows.get((N, "official (extrap.)", 0.0))
            sp = rows.get((N, "sparse", args.guards[0]))
            de = rows.get((N, "dense", 0.0))
            if off and sp:
                print(f"  N={N}: sparse (guard {args.guards[0]:g}) is x{off['seconds'] / sp['seconds']:.1f} faster than the official loop"
                      + (f", x{de['seconds'] / sp['seconds']:.1f} faster than planes-once dense" if de else ""))
    print(f"\nload after: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
