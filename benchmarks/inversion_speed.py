"""Speed and memory of projection and pivotal tuning steps (issue 4), printed as a table.

For each configuration -- the tiny_C reference checkpoint (512 px, SR 8XDC like the real model,
small channels) and the full ffhq512-128 configuration (``FFHQ512_128_INIT_KWARGS``, random
weights, neural rendering 128) -- a few steps of the *official* schedules are timed (the first
step is a warm-up and is not counted), each stage in its own subprocess so that the peak resident
memory (``ru_maxrss``) belongs to that stage alone. The per-step times are extrapolated to the
official schedule (500 projection + 350 tuning steps) and to the 'fast' preset when it exists.

LPIPS uses random backbones (same cost as the ImageNet ones). Run::

    python benchmarks/inversion_speed.py --threads 2 --steps 3
    python benchmarks/inversion_speed.py --configs tiny_C --threads 1 --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EG3D_INVERT_SHARED", REPO.parent / "shared"))


def _worker(config: str, stage: str, steps: int, threads: int) -> dict:
    import torch

    sys.path.insert(0, str(REPO))
    from eg3d_invert.camera import Camera
    from eg3d_invert.inversion import ProjectionSettings, TuningSettings, load_lpips, project, tune
    from eg3d_invert.inversion.results import Pivot

    torch.set_num_threads(threads)
    t0 = time.time()
    if config == "ffhq512-128":
        from eg3d_invert.generator import TriPlaneGenerator
        from eg3d_invert.pretrained.official import FFHQ512_128_INIT_KWARGS

        torch.manual_seed(0)
        G = TriPlaneGenerator(**FFHQ512_128_INIT_KWARGS).eval().requires_grad_(False)
        G.neural_rendering_resolution = 128
    else:
        from eg3d_invert.pretrained import load_generator

        G = load_generator(SHARED / "reference" / f"{config}.pkl")
    load_s = time.time() - t0
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cam = Camera.from_angles(10.0, 3.0)
    image = torch.zeros(1, 3, G.img_resolution, G.img_resolution)
    stamps: list[float] = []

    def cb(progress):
        stamps.append(time.perf_counter())
        return progress.step >= steps + 1  # one warm-up step, then `steps` timed ones

    start = time.perf_counter()
    if stage == "project":
        project(G, image, cam, settings=ProjectionSettings(), lpips_model=load_lpips("vgg", pretrained_backbone=False),
                callback=cb)
    else:
        pivot = Pivot(ws=G.w_avg.reshape(1, 1, -1).expand(1, G.num_ws, -1).clone(), camera=cam.label)
        tune(G, pivot, image, settings=TuningSettings(lpips_threshold=0.0),
             lpips_model=load_lpips("alex", pretrained_backbone=False), callback=cb)
    per_step = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    return {"config": config, "stage": stage, "threads": torch.get_num_threads(), "load_seconds": load_s,
            "first_step_seconds": stamps[0] - start, "step_seconds": per_step,
            "mean_step_seconds": sum(per_step) / len(per_step), "rss_after_load_mb": rss_loaded,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "parameters": sum(p.numel() for p in G.parameters()), "loadavg": os.getloadavg()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="tiny_C,ffhq512-128")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per stage (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the raw measurements here")
    ap.add_argument("--worker", nargs=2, metavar=("CONFIG", "STAGE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker[0], args.worker[1], args.steps, args.threads)))
        return

    sys.path.insert(0, str(REPO))
    from eg3d_invert.inversion import PROJECTION_PRESETS, TUNING_PRESETS

    print(f"threads {args.threads}, cpus {os.cpu_count()}, load average before "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    rows = []
    for config in args.configs.split(","):
        for stage in ("project", "tune"):
            cmd = [sys.executable, __file__, "--worker", config, stage, "--steps", str(args.steps),
                   "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{config} {stage}: failed\n{out.stderr[-2000:]}")
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"  {config} {stage}: {row['mean_step_seconds']:.2f} s/step "
                  f"({', '.join(f'{s:.2f}' for s in row['step_seconds'])}), peak {row['peak_rss_mb']:.0f} MB, "
                  f"load {row['loadavg'][0]:.2f}", flush=True)
    print(f"\nload average after {', '.join(f'{x:.2f}' for x in os.getloadavg())}; LPIPS backbones random "
          f"(same cost as ImageNet ones); official settings: depth samples x2, VGG LPIPS at 256 px for projection, "
          f"AlexNet LPIPS at full size for tuning.")
    head = (f"{'config':12s} {'stage':8s} {'params':>8s} {'thr':>3s} | {'s/step':>7s} {'1st step':>8s} | "
            f"{'RSS loaded':>10s} {'peak RSS':>9s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['config']:12s} {r['stage']:8s} {r['parameters'] / 1e6:7.1f}M {r['threads']:3d} | "
              f"{r['mean_step_seconds']:7.2f} {r['first_step_seconds']:8.2f} | {r['rss_after_load_mb']:8.0f}MB "
              f"{r['peak_rss_mb']:7.0f}MB")
    presets = {"official": (PROJECTION_PRESETS["official"].num_steps, TUNING_PRESETS["official"].num_steps)}
    if "fast" in PROJECTION_PRESETS:
        presets["fast"] = (PROJECTION_PRESETS["fast"].num_steps, TUNING_PRESETS["fast"].num_steps)
    print("\nExtrapolated wall time of one inversion (projection + tuning; tuning may stop earlier at its "
          "LPIPS threshold):")
    for config in dict.fromkeys(r["config"] for r in rows):
        per = {r["stage"]: r["mean_step_seconds"] for r in rows if r["config"] == config}
        if len(per) < 2:
            continue
        for name, (n_proj, n_tune) in presets.items():
            total = n_proj * per["project"] + n_tune * per["tune"]
            print(f"  {config:12s} {name:9s} {n_proj:4d} + {n_tune:4d} steps: {total / 60:7.1f} min "
                  f"({n_proj * per['project'] / 60:.1f} + {n_tune * per['tune'] / 60:.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
