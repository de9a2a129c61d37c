"""Speed and memory of projection and pivotal tuning steps (issue 4), printed as a table.

For each configuration -- the tiny_C reference checkpoint (512 px, SR 8XDC like the real model,
small channels) and the full ffhq512-128 configuration (``FFHQ512_128_INIT_KWARGS``, random
weights, neural rendering 128) -- a few steps of each preset's schedule (``--presets``, default
official and fast, each with its own kind of step) are timed (the first step is a warm-up and is
not counted), each stage in its own subprocess so that the peak resident memory (``ru_maxrss``)
belongs to that stage alone. The per-step times are extrapolated to each preset's schedule
(official 500 + 350 steps, fast 200 + 80) and the ratio printed. Outputs (views, video, mesh) are
``benchmarks/pipeline.py``'s.

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


def _worker(config: str, stage: str, steps: int, threads: int, preset: str = "official") -> dict:
    import torch

    sys.path.insert(0, str(REPO))
    from eg3d_invert.camera import Camera
    from eg3d_invert.inversion import load_lpips, project, tune
    from eg3d_invert.inversion.results import Pivot
    from eg3d_invert.inversion.settings import resolve_settings

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

    proj, tun = resolve_settings(preset=preset)  # the preset's own kind of step (coarse or full, its sampling)
    start = time.perf_counter()
    if stage == "project":
        project(G, image, cam, settings=proj, lpips_model=load_lpips(proj.lpips_net, pretrained_backbone=False),
                callback=cb)
    else:
        pivot = Pivot(ws=G.w_avg.reshape(1, 1, -1).expand(1, G.num_ws, -1).clone(), camera=cam.label)
        tune(G, pivot, image, settings=tun.replace(lpips_threshold=0.0),
             lpips_model=load_lpips(tun.lpips_net, pretrained_backbone=False), callback=cb)
    per_step = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    return {"config": config, "stage": stage, "preset": preset, "threads": torch.get_num_threads(), "load_seconds": load_s,
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
    ap.add_argument("--presets", default="official,fast", help="schedules to time, each with its own kind of step")
    ap.add_argument("--worker", nargs=3, metavar=("CONFIG", "STAGE", "PRESET"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker[0], args.worker[1], args.steps, args.threads, args.worker[2])))
        return

    sys.path.insert(0, str(REPO))
    from eg3d_invert.inversion import PROJECTION_PRESETS, TUNING_PRESETS

    print(f"threads {args.threads}, cpus {os.cpu_count()}, load average before "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    rows = []
    presets = args.presets.split(",")
    for config in args.configs.split(","):
        for preset in presets:
            for stage in ("project", "tune"):
                cmd = [sys.executable, __file__, "--worker", config, stage, preset, "--steps", str(args.steps),
                       "--threads", str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"{config} {preset} {stage}: failed\n{out.stderr[-2000:]}")
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"  {config} {preset} {stage}: {row['mean_step_seconds']:.2f} s/step "
                      f"({', '.join(f'{s:.2f}' for s in row['step_seconds'])}), peak {row['peak_rss_mb']:.0f} MB, "
                      f"load {row['loadavg'][0]:.2f}", flush=True)
    print(f"\nload average after {', '.join(f'{x:.2f}' for x in os.getloadavg())}; LPIPS backbones random "
          f"(same cost as ImageNet ones); official: depth samples x2, VGG LPIPS at 256 px for projection, "
          f"AlexNet LPIPS at full size for tuning; fast: projection on the raw render at half resolution.")
    head = (f"{'config':12s} {'preset':9s} {'stage':8s} {'params':>8s} {'thr':>3s} | {'s/step':>7s} {'1st step':>8s} | "
            f"{'RSS loaded':>10s} {'peak RSS':>9s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['config']:12s} {r['preset']:9s} {r['stage']:8s} {r['parameters'] / 1e6:7.1f}M {r['threads']:3d} | "
              f"{r['mean_step_seconds']:7.2f} {r['first_step_seconds']:8.2f} | {r['rss_after_load_mb']:8.0f}MB "
              f"{r['peak_rss_mb']:7.0f}MB")
    print("\nExtrapolated wall time of one inversion (projection + tuning; tuning may stop earlier at its "
          "LPIPS threshold):")
    for config in dict.fromkeys(r["config"] for r in rows):
        totals = {}
        for preset in presets:
            per = {r["stage"]: r["mean_step_seconds"] for r in rows if r["config"] == config and r["preset"] == preset}
            if len(per) < 2:
                continue
            n_proj, n_tune = PROJECTION_PRESETS[preset].num_steps, TUNING_PRESETS[preset].num_steps
            totals[preset] = total = n_proj * per["project"] + n_tune * per["tune"]
            ratio = f"  ({totals['official'] / total:.2f}x faster than official)" if "official" in totals else ""
            print(f"  {config:12s} {preset:9s} {n_proj:4d} + {n_tune:4d} steps: {total / 60:7.1f} min "
                  f"({n_proj * per['project'] / 60:.1f} + {n_tune * per['tune'] / 60:.1f}){ratio}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
