"""Photos per minute of a batch: the local engine against Ray with 1 and 2 workers, on this machine.

Each run is the real command, in its own process (``eg3d-invert FOLDER --out DIR ... --json``),
so its wall time holds everything a user waits for: imports, loading the models (once in the
local engine; once per worker with Ray), starting the local Ray instance, and the photos. The
batch time is the summary's ``seconds`` (from the first photo's scheduling to the last outcome:
for Ray it includes starting the instance and the workers). Every run sees all the cores:

* ``local``: one process, torch's default threads (one per core);
* ``ray x1``: one worker with ``--cpus-per-worker`` = all cores (the same threads as local);
* ``ray x2``: two workers, the cores split between them (one each on a 2-core machine).

The photos are variants of scikit-image's astronaut and matplotlib's Grace Hopper (mirrored and
rescaled), inverted with a reference checkpoint (``--configs tiny_A tiny_C``) and
``--steps`` / ``--pti-steps`` steps, rendering two views with depth (no video, no mesh); LPIPS
uses random backbones (same cost as the ImageNet ones). Outputs of the three runs are checked to
be the same pixels.

    python benchmarks/batch_ray.py                       # tiny_A, 6 photos, 20 + 10 steps
    python benchmarks/batch_ray.py --configs tiny_A tiny_C --photos 4 --json /tmp/batch_ray.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EG3D_INVERT_SHARED", REPO.parent / "shared"))


def _photos(folder: Path, count: int) -> list[Path]:
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    astronaut = Image.fromarray(skimage.data.astronaut())
    grace = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    variants = []
    for scale in (1.0, 0.8, 1.25):
        for name, image in (("astronaut", astronaut), ("grace", grace)):
            size = (round(image.width * scale), round(image.height * scale))
            variants.append((f"{name}_{scale:g}", image.resize(size)))
            variants.append((f"{name}_{scale:g}_mirror", image.resize(size).transpose(Image.FLIP_LEFT_RIGHT)))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in variants[:count]:
        image.save(folder / f"{name}.png")
        paths.append(folder / f"{name}.png")
    return paths


def _run(photos: Path, out: Path, config: str, steps: int, pti_steps: int, engine: list[str]) -> dict:
    cmd = [sys.executable, "-m", "eg3d_invert.cli", str(photos), "--out", str(out),
           "--network", str(SHARED / "reference" / f"{config}.pkl"), "--device", "cpu", "--steps", str(steps),
           "--pti-steps", str(pti_steps), "--views=-20,20", "--no-video", "--mesh", "none", "--json", "--quiet",
           *engine]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    doc = json.loads(proc.stdout)
    return {"wall_s": round(wall, 1), "batch_s": doc["seconds"], "photos": doc["succeeded"],
            "per_photo_s": round(float(np.mean([p["seconds"] for p in doc["photos"]])), 2)}


def _largest_difference(a: Path, b: Path) -> int:
    from PIL import Image

    largest = 0
    for path in a.rglob("*.png"):
        x = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
        y = np.asarray(Image.open(b / path.relative_to(a)).convert("RGB"), dtype=np.int16)
        largest = max(largest, int(np.abs(x - y).max()))
    return largest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny_A"], help="reference checkpoints (tiny_A, tiny_C)")
    parser.add_argument("--photos", type=int, default=6, help="photos in the batch (at most 12)")
    parser.add_argument("--steps", type=int, default=20, help="projection steps")
    parser.add_argument("--pti-steps", type=int, default=10, help="tuning steps")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from tests.lpips_weights import write_random_backbones

    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="batch_ray_") as tmp:
        tmp = Path(tmp)
        os.environ["TORCH_HOME"] = str(write_random_backbones(tmp / "torch_home"))
        photos = _photos(tmp / "photos", args.photos)
        engines = {
            "local": [],
            "ray x1": ["--engine", "ray", "--workers", "1", "--cpus-per-worker", str(cores)],
            "ray x2": ["--engine", "ray", "--workers", "2", "--cpus-per-worker", str(max(1, cores // 2))],
        }
        for config in args.configs:
            outs = {}
            for label, engine in engines.items():
                outs[label] = tmp / f"out_{config}_{label.replace(' ', '')}"
                r = _run(tmp / "photos", outs[label], config, args.steps, args.pti_steps, engine)
                r.update(config=config, engine=label, photos_per_min_wall=round(60 * len(photos) / r["wall_s"], 2),
                         photos_per_min_batch=round(60 * len(photos) / r["batch_s"], 2))
                rows.append(r)
                print(f"{config:7s} {label:7s} wall {r['wall_s']:7.1f} s  batch {r['batch_s']:7.1f} s  "
                      f"{r['photos_per_min_wall']:6.2f} photos/min (wall)  {r['photos_per_min_batch']:6.2f} "
                      f"photos/min (batch)  {r['per_photo_s']:.1f} s per photo in its worker", flush=True)
            for label in ("ray x1", "ray x2"):
                diff = _largest_difference(outs["local"], outs[label])
                print(f"{config:7s} {label:7s} largest pixel difference to local: {diff}")
                for r in rows:
                    if r["config"] == config and r["engine"] == label:
                        r["largest_pixel_difference"] = diff
    print(f"{len(photos)} photos, {args.steps} + {args.pti_steps} steps, {cores} cores")
    if args.json:
        args.json.write_text(json.dumps({"photos": len(photos), "steps": args.steps, "pti_steps": args.pti_steps,
                                         "cores": cores, "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
