"""Latency of ``eg3d-invert view`` on the full ffhq512-128 configuration, through HTTP, side by side
with the generator's forward pass.

Usage:
    .venv/bin/python benchmarks/viewer.py                     # 5 timed rounds, 2 threads
    .venv/bin/python benchmarks/viewer.py --repeats 5 --json viewer.json

The real checkpoint cannot be downloaded everywhere, so the generator is the full ffhq512-128
configuration with random weights (``benchmarks/generator.py`` does the same): the cost of a
render does not depend on the weights' values. It is saved as a base checkpoint, a real result
folder is made from it with the public API (scikit-image's astronaut, 1 projection + 1 tuning step,
random LPIPS backbones), and :func:`eg3d_invert.viewer.serve` serves it. Each row is the wall time
(and the process's CPU time) of HTTP requests from this process to that server (PNG included),
median of ``--repeats`` after
one warm-up round, the rows taking turns (so that the machine's load hits them alike), every
request asking for something not rendered before (a new camera, a new edit):

* camera-only preview (target <= 0.5 s) and edited preview (target <= 1.0 s, a new SeFa
  value each time; the coarse edited preview of :mod:`eg3d_invert.viewer.frames`);
* full frame after a camera change (target <= the generator's forward), and after an edit (the
  worst case: new planes plus the full frame);
* the generator's forward (``G.synthesis`` of the pivot, the checkpoint's sample counts), measured
  in the same process between the requests;
* for reference, the exact edited preview (every backbone block recomputed) in-process.

The load average is printed before and after: on shared cores it changes everything.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_result(workdir: Path) -> Path:
    """A result folder of a random-weight full-size generator, made once per workdir."""
    folder = workdir / "astronaut"
    if (folder / "report.json").is_file():
        return folder
    import skimage.data
    import torch

    sys.path.insert(0, str(REPO))
    from eg3d_invert import Inverter
    from eg3d_invert.generator import TriPlaneGenerator
    from eg3d_invert.pretrained import save_generator
    from eg3d_invert.pretrained.official import FFHQ512_128_INIT_KWARGS
    from tests.lpips_weights import write_random_backbones

    os.environ["TORCH_HOME"] = str(write_random_backbones(workdir / "torch_home"))
    torch.manual_seed(0)
    G = TriPlaneGenerator(**FFHQ512_128_INIT_KWARGS).eval().requires_grad_(False)
    G.neural_rendering_resolution = 128
    base = save_generator(G, workdir / "ffhq512-128-random.safetensors")
    print("making a result folder (1 projection + 1 tuning step on the full configuration)...", flush=True)
    inverter = Inverter.from_pretrained(base, device="cpu", steps=1, pti_steps=1, projection_lpips="alex",
                                        tuning_lpips="alex")
    inverter.invert(skimage.data.astronaut(), name="astronaut").save(folder)
    return folder


def measure(rows, repeats: int) -> dict[str, dict]:
    """Run the rows round-robin (one warm-up round, then ``repeats`` rounds), so that a change of
    the machine's load hits every row alike; wall and process CPU time (the server's threads are
    in this process) per call."""
    wall: dict[str, list[float]] = {name: [] for name, _, _ in rows}
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in rows}
    for k in range(-1, repeats):
        for name, _, fn in rows:
            t0, c0 = time.perf_counter(), time.process_time()
            fn(k)
            if k >= 0:
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    return {name: {"seconds": statistics.median(wall[name]), "all_seconds": wall[name],
                   "cpu_seconds": statistics.median(cpu[name]), "target": target} for name, target, _ in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/eg3d-invert-viewer-benchmark"),
                    help="keeps the random base checkpoint and the result folder between runs")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO))
    from eg3d_invert.render import Scene
    from eg3d_invert.viewer import Edit, FrameSpec, apply_edit, render_frame, serve
    from eg3d_invert.viewer.frames import encode_png

    args.workdir.mkdir(parents=True, exist_ok=True)
    folder = make_result(args.workdir)
    t0 = time.perf_counter()
    server = serve([folder], port=0, device="cpu", sefa_cache=None)  # no cache: time SeFa too
    startup = time.perf_counter() - t0
    session = server.viewer.sessions["astronaut"]
    G, settings = session.generator, session.settings
    scene = session.result.scene
    print(f"load average before: {os.getloadavg()}  cpus: {os.cpu_count()}  torch threads: {torch.get_num_threads()}"
          f"  torch {torch.__version__}", flush=True)
    print(f"viewer start-up (load result + SeFa of the full checkpoint): {startup:.1f} s; preview "
          f"{settings.preview_resolution}px x {settings.preview_samples}+{settings.preview_samples} samples, "
          f"full {G.neural_rendering_resolution}px x {settings.full_sample_mult:g} x 48+48 samples + SR to "
          f"{G.img_resolution}px, edited previews recompute blocks <= {settings.coarse_edit_resolution}", flush=True)

    def get(**params) -> float:
        url = server.url + "api/render?" + urllib.parse.urlencode({"result": "astronaut", **params})
        with urllib.request.urlopen(url, timeout=600) as response:
            assert response.status == 200 and response.headers["Content-Type"] == "image/png"
            response.read()
            return float(response.headers["X-Render-Seconds"])

    label = scene.cameras(0.0, 0.0).label

    def forward(k):
        with torch.no_grad():
            G.synthesis(scene.ws, label, noise_mode="const")

    def exact_edited_preview(k):
        ws = apply_edit(scene.ws, Edit(sefa=((1, 0.5 + 0.1 * k),)), w_avg=G.w_avg, directions=session.directions)
        encode_png(render_frame(Scene.from_ws(G, ws), FrameSpec(5.0, 0.0, "image", "preview"), settings))

    rows = [
        ("camera-only preview", 0.5, lambda k: get(yaw=10 + k, pitch=2, quality="preview")),
        ("edited preview (coarse, new SeFa value)", 1.0, lambda k: get(yaw=5, quality="preview", sefa=f"0:{1 + 0.1 * k:g}")),
        ("depth preview", None, lambda k: get(yaw=-10 - k, kind="depth", quality="preview")),
        ("full frame, camera change", "forward", lambda k: get(yaw=20 + k, pitch=-3, quality="full")),
        ("full frame, new edit", "forward", lambda k: get(yaw=5, quality="full", sefa=f"0:{2 + 0.1 * k:g}")),
        ("generator forward (G.synthesis)", None, forward),
        ("exact edited preview (in-process, for reference)", None, exact_edited_preview),
    ]
    results = measure(rows, args.repeats)
    server.stop()
    print(f"{'':52s}  median wall   median CPU   (wall of each run)")
    for name, r in results.items():
        print(f"  {name:50s} {r['seconds']:8.3f} s {r['cpu_seconds']:9.3f} s   "
              f"({', '.join(f'{t:.3f}' for t in r['all_seconds'])})", flush=True)
    forward_s = results["generator forward (G.synthesis)"]["seconds"]
    print(f"load average after: {os.getloadavg()}")
    print("\ntargets:")
    for name, r in results.items():
        target = forward_s if r["target"] == "forward" else r["target"]
        if target is not None:
            verdict = "met" if r["seconds"] <= target else "MISSED"
            print(f"  {name:50s} {r['seconds']:7.3f} s <= {target:.3f} s: {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({"load_average_after": os.getloadavg(), "threads": args.threads,
                                               "results": results}, indent=2))


if __name__ == "__main__":
    main()
