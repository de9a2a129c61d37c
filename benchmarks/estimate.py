"""Do the time estimate and the progress bars' remaining times turn out right? (issue 9)

One photo (scikit-image's astronaut) through the public API with a preset's real schedule: first
the estimate the CLI prints (:func:`eg3d_invert.estimate.estimate_photo_time`, measured now, no
cache), then the work itself, with the CLI's progress display fed the same events. For every
stage the table shows the estimate, the actual time, and the remaining time the stage's bar
showed when a quarter and half of its steps were done, against the time that really remained.

    python benchmarks/estimate.py --config tiny_C --preset fast
    python benchmarks/estimate.py --config full --preset fast --steps 40 --pti-steps 16 --frames 8

``--steps`` / ``--pti-steps`` shorten the schedule (same kinds of steps), ``--frames`` the video;
LPIPS backbones are random (same cost as the ImageNet ones).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EG3D_INVERT_SHARED", REPO.parent / "shared"))


def _seconds(eta: str) -> float | None:
    m = re.search(r"(?:(\d+):)?(\d+):(\d\d)$", eta)
    if not m:
        return None
    h, mi, s = (int(x) if x else 0 for x in m.groups())
    return h * 3600 + mi * 60 + s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny_C", choices=["tiny_A", "tiny_C", "full"])
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--pti-steps", type=int, default=None)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--mesh-res", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import skimage.data
    import torch

    sys.path.insert(0, str(REPO))
    from eg3d_invert.api import Inverter
    from eg3d_invert.cli import _Display
    from eg3d_invert.estimate import estimate_photo_time
    from eg3d_invert.inversion import load_lpips
    from eg3d_invert.inversion.settings import resolve_settings
    from eg3d_invert.options import RenderOptions
    from eg3d_invert.outputs import write_renders
    from eg3d_invert.preprocessing import Aligner

    torch.set_num_threads(args.threads)
    if args.config == "full":
        from eg3d_invert.generator import TriPlaneGenerator
        from eg3d_invert.pretrained.official import FFHQ512_128_INIT_KWARGS

        torch.manual_seed(0)
        G = TriPlaneGenerator(**FFHQ512_128_INIT_KWARGS).eval().requires_grad_(False)
        G.neural_rendering_resolution = 128
    else:
        from eg3d_invert.pretrained import load_generator

        G = load_generator(SHARED / "reference" / f"{args.config}.pkl")
    proj, tun = resolve_settings(preset=args.preset, steps=args.steps, pti_steps=args.pti_steps)
    tun = tun.replace(lpips_threshold=0.0)  # every step runs, as the estimate assumes
    lpips = {net: load_lpips(net, pretrained_backbone=False) for net in ("vgg", "alex")}
    inverter = Inverter(G, Aligner(), projection=proj, tuning=tun, lpips=lpips)
    inverter.align(skimage.data.astronaut())  # the face models' lazy start is not a photo's cost
    options = RenderOptions(frames=args.frames, mesh_resolution=args.mesh_res, mesh_formats=("ply",))
    print(f"{args.config}, preset {args.preset} ({proj.num_steps} + {tun.num_steps} steps), {args.threads} threads, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)

    t0 = time.perf_counter()
    est = estimate_photo_time(inverter, options, use_cache=False)
    probe_s = time.perf_counter() - t0
    print(f"estimate ({probe_s:.1f} s to measure): {est.describe()}", flush=True)

    display = _Display("photos", True, est)
    marks: dict[str, dict] = {}
    starts: dict[str, float] = {}

    def feed(stage: str, done: int, total: int | None) -> None:
        now = time.perf_counter()
        if done == 0 or stage not in starts:
            starts.setdefault(stage, now)
        display(stage, done, total)
        eta = display.progress.tasks[display.stage].fields.get("eta", "")
        if total and total >= 4:
            for frac in (0.25, 0.5):
                if done == max(2, int(total * frac)) and (stage, frac) not in marks:
                    marks[(stage, frac)] = {"t": now, "shown": _seconds(eta)}

    def on_step(p):
        feed(p.stage, p.step, p.total)

    ends: dict[str, float] = {}
    t_photo = time.perf_counter()
    result = inverter.invert(skimage.data.astronaut(), callback=on_step)
    for stage in ("align", "project", "tune", "finalize"):
        ends[stage] = starts.get(stage, t_photo) + result.timings[stage]
    out = Path(tempfile.mkdtemp(prefix="eg3d_estimate_"))
    result.save(out)
    renders = write_renders(result, out, options, progress=lambda s, d, t: feed(s, d, t))
    total_actual = time.perf_counter() - t_photo
    actual = {**result.timings, **renders.timings}
    for stage, secs in renders.timings.items():
        ends[stage] = starts.get(stage, t_photo) + secs

    print(f"\n{'stage':9} {'estimate':>9} {'actual':>9} {'error':>7} | remaining shown at 25% / 50% of the "
          f"stage vs real")
    for stage in ("align", "project", "tune", "finalize", "views", "depth", "video", "mesh"):
        if stage not in actual and stage not in est.stages:
            continue
        e, a = est.stages.get(stage, 0.0), actual.get(stage, 0.0)
        err = f"{(e - a) / a * 100:+6.0f}%" if a > 1 else "      "
        shown = []
        for frac in (0.25, 0.5):
            m = marks.get((stage, frac))
            if m and m["shown"] is not None and stage in ends:
                real = ends[stage] - m["t"]
                shown.append(f"{m['shown']:6.0f} s vs {real:6.0f} s ({(m['shown'] - real) / max(real, 1e-9) * 100:+.0f}%)")
        print(f"{stage:9} {e:8.1f}s {a:8.1f}s {err} | {' / '.join(shown)}")
    print(f"{'total':9} {est.total:8.1f}s {total_actual:8.1f}s {(est.total - total_actual) / total_actual * 100:+6.0f}%"
          f"   (load at the end {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
