"""Speed and peak memory of the generator on CPU: forward, projection step, PTI step, mesh query.

Usage:
    .venv/bin/python benchmarks/generator.py                      # full ffhq512-128 (random weights) + tiny_C
    .venv/bin/python benchmarks/generator.py --configs tiny_C --repeats 3
    .venv/bin/python benchmarks/generator.py --official-root /path/to/NVlabs/eg3d/eg3d

Each measurement runs in its own subprocess so its peak RSS (``ru_maxrss``) is its own. Times are
the median of ``--repeats`` runs after one warm-up (wall time, and the process's CPU time, which
shared cores disturb less), batch 1, float32, the official *random*
depth sampling, ``--threads`` torch threads (default 2). The machine load is printed, because
on shared cores it changes everything.

``--official-root`` points at a checkout of the official code (the folder holding ``training/``
and ``torch_utils/``); it is imported only in the subprocesses that measure it, never shipped.
The same measurements then run on the official ``TriPlaneGenerator`` built from the same
init_kwargs and weights.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("EG3D_INVERT_SHARED", REPO.parent / "shared")) / "reference"
STEPS = ("forward", "projection", "pti", "mesh")


def _build(config: str, impl: str, official_root: str | None):
    import torch

    sys.path.insert(0, str(REPO))
    from eg3d_invert.pretrained import load_generator
    from eg3d_invert.pretrained.official import FFHQ512_128_INIT_KWARGS
    from eg3d_invert.generator import TriPlaneGenerator

    torch.manual_seed(0)
    if config == "full":
        ours = TriPlaneGenerator(**FFHQ512_128_INIT_KWARGS).eval().requires_grad_(False)
        ours.neural_rendering_resolution = 128
    else:
        ours = load_generator(REFERENCE / f"{config}.pkl")
    if impl == "ours":
        return ours
    # The official class, same configuration and the same tensors.
    sys.path.insert(0, official_root)
    from training.triplane import TriPlaneGenerator as Official  # noqa: E402 (outside the repo)
    G = Official(**json.loads(json.dumps(ours.init_kwargs))).eval().requires_grad_(False)
    G.load_state_dict(ours.state_dict(), strict=False)
    G.neural_rendering_resolution = ours.neural_rendering_resolution
    G.rendering_kwargs = dict(ours.rendering_kwargs)
    return G


def _measure(config: str, step: str, impl: str, repeats: int, threads: int, official_root: str | None) -> dict:
    import torch

    torch.set_num_threads(threads)
    G = _build(config, impl, official_root)
    from eg3d_invert.camera import Camera

    torch.manual_seed(1)
    c = Camera.from_angles(15.0, -5.0).label
    z = torch.randn(1, G.z_dim)
    with torch.no_grad():
        ws = G.mapping(z, Camera.from_angles(0.0, 0.0).label)

    if step == "forward":
        def run():
            with torch.no_grad():
                G.synthesis(ws, c, noise_mode="const")["image"]
    elif step == "projection":
        w_opt = ws.clone().requires_grad_(True)

        def run():
            img = G.synthesis(w_opt, c, noise_mode="const")["image"]
            img.square().mean().backward()
            w_opt.grad = None
    elif step == "pti":
        G.requires_grad_(True)
        if impl == "ours":  # what eg3d_invert.inversion.tune uses, in the process an Inverter sets up
            from eg3d_invert.devices import reuse_freed_memory
            from eg3d_invert.inversion.tuning import tuning_optimizer

            reuse_freed_memory()
            opt = tuning_optimizer(G.parameters(), lr=3e-4)
        else:  # PTI: torch's default Adam
            opt = torch.optim.Adam(G.parameters(), lr=3e-4)

        def run():
            img = G.synthesis(ws, c, noise_mode="const")["image"]
            opt.zero_grad(set_to_none=True)
            img.square().mean().backward()
            opt.step()
    elif step == "mesh":
        res = 128
        lin = torch.linspace(-0.5, 0.5, res)
        pts = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(1, -1, 3)

        if impl == "ours":
            def run():
                with torch.no_grad():
                    planes = G.planes(ws)
                    for s in range(0, pts.shape[1], 1 << 20):
                        G.sample_planes(planes, pts[:, s:s + (1 << 20)], need_rgb=False)
        else:  # what gen_samples.py does: G.sample per 1M-point chunk (re-runs mapping + backbone)
            def run():
                with torch.no_grad():
                    for s in range(0, pts.shape[1], 1 << 20):
                        chunk = pts[:, s:s + (1 << 20)]
                        G.sample(chunk, torch.zeros_like(chunk), z, Camera.from_angles(0.0, 0.0).label,
                                 noise_mode="const")["sigma"]
    else:
        raise ValueError(step)

    run()  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"config": config, "step": step, "impl": impl, "seconds": statistics.median(times),
            "all_seconds": times, "cpu_seconds": statistics.median(cpu), "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["full", "tiny_C"], help="full and/or reference names")
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--official-root", default=None, help="folder with the official training/ and torch_utils/")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--_one", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args._one:
        config, step, impl = args._one
        print(json.dumps(_measure(config, step, impl, args.repeats, args.threads, args.official_root)))
        return

    impls = ["ours"] + (["official"] if args.official_root else [])
    print(f"load average before: {os.getloadavg()}  cpus: {os.cpu_count()}  threads: {args.threads}", flush=True)
    results = []
    for config in args.configs:
        for step in args.steps:
            for impl in impls:
                cmd = [sys.executable, __file__, "--_one", config, step, impl, "--repeats", str(args.repeats),
                       "--threads", str(args.threads)] + (["--official-root", args.official_root]
                                                          if args.official_root else [])
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{config} {step} {impl}: FAILED\n{proc.stderr[-2000:]}", flush=True)
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                results.append(r)
                print(f"{config:8s} {step:11s} {impl:9s} {r['seconds']:8.3f} s  (CPU {r['cpu_seconds']:7.2f} s)"
                      f"  peak RSS {r['peak_rss_gb']:.2f} GB"
                      f"  (runs: {', '.join(f'{t:.2f}' for t in r['all_seconds'])})", flush=True)
    print(f"load average after: {os.getloadavg()}")
    if args.official_root:
        print("\nspeed-up (official / ours):")
        for config in args.configs:
            for step in args.steps:
                pair = {r["impl"]: r for r in results if r["config"] == config and r["step"] == step}
                if len(pair) == 2:
                    print(f"  {config:8s} {step:11s} x{pair['official']['seconds'] / pair['ours']['seconds']:.2f}"
                          f" (CPU time x{pair['official']['cpu_seconds'] / pair['ours']['cpu_seconds']:.2f})"
                          f"  memory {pair['ours']['peak_rss_gb']:.2f} vs {pair['official']['peak_rss_gb']:.2f} GB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
