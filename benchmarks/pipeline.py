"""Whole-pipeline time per photo, per stage: align, project, tune, finalize, views, depth, video, mesh.

What ``eg3d-invert photo.jpg --out DIR`` spends on one photo (scikit-image's astronaut), measured
through the public API (:class:`eg3d_invert.Inverter` + :func:`eg3d_invert.outputs.write_renders`)
with the default outputs (5 views, their depth maps, the 120-frame orbit video, a 256^3 PLY mesh),
for each configuration in its own process:

* ``tiny_A`` / ``tiny_C``: the reference checkpoints (128 px / 512 px with the 8XDC
  super-resolution, small channels);
* ``full``: the ffhq512-128 architecture with random weights (the real checkpoint cannot be
  downloaded here; its cost does not depend on the weights, except the mesh's, whose surface
  size does).

Each ``--presets`` schedule (default: ``official`` and ``fast``, side by side in one run, one
process each, one after the other) runs ``--steps`` / ``--pti-steps`` steps of its own kind
(coarse or full, its depth sampling, its LPIPS); the per-step time (median, first step excluded as
warm-up) is extrapolated to the preset's whole schedule (official 500 + 350 steps, fast 200 + 80),
and the ratio of the totals is printed. The video is rendered with ``--frames`` frames and
extrapolated to 120. If the density never reaches the
official level 10 (random or tiny weights), the mesh is extracted at 90% of the density's
maximum instead (reported). LPIPS uses random backbones (same cost as the ImageNet ones).

    python benchmarks/pipeline.py --configs tiny_A tiny_C --threads 2
    python benchmarks/pipeline.py --configs full --steps 3 --pti-steps 3 --frames 4 --json /tmp/full.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EG3D_INVERT_SHARED", REPO.parent / "shared"))
OFFICIAL_FRAMES = 120


def _generator(config: str):
    import torch

    if config == "full":
        from eg3d_invert.generator import TriPlaneGenerator
        from eg3d_invert.pretrained.official import FFHQ512_128_INIT_KWARGS

        torch.manual_seed(0)
        G = TriPlaneGenerator(**FFHQ512_128_INIT_KWARGS).eval().requires_grad_(False)
        G.neural_rendering_resolution = 128
        return G
    from eg3d_invert.pretrained import load_generator

    return load_generator(SHARED / "reference" / f"{config}.pkl")


def _worker(config: str, preset: str, steps: int, pti_steps: int, frames: int, mesh_res: int, threads: int) -> dict:
    import numpy as np
    import skimage.data
    import torch

    sys.path.insert(0, str(REPO))
    from eg3d_invert.api import Inverter
    from eg3d_invert.inversion.settings import resolve_settings
    from eg3d_invert.inversion import load_lpips
    from eg3d_invert.options import RenderOptions
    from eg3d_invert.outputs import write_renders
    from eg3d_invert.preprocessing import Aligner
    from eg3d_invert.render import EmptyMeshError

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    G = _generator(config)
    full_proj, full_tun = resolve_settings(preset=preset)
    schedule = {"project": full_proj.num_steps, "tune": full_tun.num_steps}
    proj, tun = resolve_settings(preset=preset, steps=steps, pti_steps=pti_steps)
    tun = tun.replace(lpips_threshold=0.0)  # always run every step: the timing is per step
    lpips = {net: load_lpips(net, pretrained_backbone=False) for net in ("vgg", "alex")}
    inverter = Inverter(G, Aligner(), projection=proj, tuning=tun, lpips=lpips)
    inverter.align(skimage.data.astronaut())  # the face models' first call (lazy init) is not a photo's cost
    setup = time.perf_counter() - t0

    stamps: dict[str, list[float]] = {"project": [], "tune": []}

    def callback(p):
        if p.stage in stamps and p.step > 0:
            stamps[p.stage].append(time.perf_counter())

    result = inverter.invert(skimage.data.astronaut(), callback=callback)
    per_step = {}
    for stage, ts in stamps.items():
        diffs = np.diff(ts)
        per_step[stage] = float(np.median(diffs)) if len(diffs) else result.timings[stage] / max(1, len(ts))
    out = Path(tempfile.mkdtemp(prefix="eg3d_pipeline_"))
    result.save(out)
    options = RenderOptions(frames=frames, mesh_resolution=mesh_res, mesh_formats=())
    render_t = dict(write_renders(result, out, options).timings)
    level = 10.0
    t1 = time.perf_counter()
    try:
        result.mesh(mesh_res, level)
    except EmptyMeshError:
        from eg3d_invert.render.lattice import dense_density
        from eg3d_invert.render.mesh import plane_density

        coarse = dense_density(plane_density(result.scene), 64, result.scene.box_warp)
        level = float(0.9 * coarse.max())
        t1 = time.perf_counter()
        result.mesh(mesh_res, level)
    render_t["mesh"] = time.perf_counter() - t1
    stages = {k: round(v, 3) for k, v in {**result.timings, **render_t}.items()}
    whole = dict(stages)
    for stage, n in schedule.items():
        whole[stage] = round(stages[stage] + per_step[stage] * (n - len(stamps[stage])), 1)
    whole["video"] = round(stages["video"] * OFFICIAL_FRAMES / frames, 1)
    return {"config": config, "preset": preset, "schedule": schedule, "threads": threads, "img_resolution": G.img_resolution,
            "neural_rendering_resolution": G.neural_rendering_resolution, "steps": steps, "pti_steps": pti_steps,
            "frames": frames, "mesh_resolution": mesh_res, "mesh_level": level, "setup_s": round(setup, 2),
            "seconds_per_step": {k: round(v, 3) for k, v in per_step.items()}, "measured_s": stages,
            "measured_total_s": round(sum(stages.values()), 1), "schedule_s": whole,
            "schedule_total_s": round(sum(whole.values()), 1), "loadavg": os.getloadavg(),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny_A", "tiny_C"], choices=["tiny_A", "tiny_C", "full"])
    parser.add_argument("--presets", nargs="+", default=["official", "fast"])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--pti-steps", type=int, default=4)
    parser.add_argument("--frames", type=int, default=OFFICIAL_FRAMES)
    parser.add_argument("--mesh-res", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--_one", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._one:
        config, preset = args._one
        print(json.dumps(_worker(config, preset, args.steps, args.pti_steps, args.frames, args.mesh_res,
                                 args.threads)))
        return
    print(f"threads {args.threads}, cpus {os.cpu_count()}, load average before "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results = []
    for config in args.configs:
        for preset in args.presets:
            cmd = [sys.executable, __file__, "--_one", config, preset, "--steps", str(args.steps), "--pti-steps",
                   str(args.pti_steps), "--frames", str(args.frames), "--mesh-res", str(args.mesh_res), "--threads",
                   str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if proc.returncode != 0:
                print(f"{config} {preset}: failed\n{proc.stderr}", file=sys.stderr)
                continue
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"  {config} {preset}: done, load {results[-1]['loadavg'][0]:.2f}", flush=True)
    stages = ["align", "project", "tune", "finalize", "views", "depth", "video", "mesh"]
    print(f"{'config':8} {'preset':9} {'kind':10} " + " ".join(f"{s:>8}" for s in stages) + f" {'total':>9}")
    for r in results:
        for kind, key, total in (("measured", "measured_s", "measured_total_s"),
                                 ("schedule", "schedule_s", "schedule_total_s")):
            print(f"{r['config']:8} {r['preset']:9} {kind:10} " + " ".join(f"{r[key].get(s, 0):8.1f}" for s in stages)
                  + f" {r[total]:9.1f}")
        print(f"{'':8} {'':9} per step: project {r['seconds_per_step']['project']:.3f} s, tune "
              f"{r['seconds_per_step']['tune']:.3f} s; schedule {r['schedule']['project']}+{r['schedule']['tune']} "
              f"steps (measured {r['steps']}+{r['pti_steps']}), {r['frames']} frames -> {OFFICIAL_FRAMES}, "
              f"mesh {r['mesh_resolution']}^3 at level {r['mesh_level']:.3g}; peak RSS {r['peak_rss_mb']} MB")
    print("\nwhole pipeline, photo to outputs, each preset's full schedule:")
    for config in dict.fromkeys(r["config"] for r in results):
        by = {r["preset"]: r for r in results if r["config"] == config}
        if "official" not in by:
            continue
        base = by["official"]["schedule_total_s"]
        for preset, r in by.items():
            print(f"  {config:8} {preset:9} {r['schedule_total_s'] / 60:7.1f} min   "
                  f"{base / r['schedule_total_s']:5.2f}x faster than official ({r['schedule_total_s'] / base:.3f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
