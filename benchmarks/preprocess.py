#!/usr/bin/env python
"""Milliseconds per photo for each preprocessing stage, models loaded once.

Stages: read (decode the file), detect (MTCNN; with ``--mirror-average`` on the photo and its
mirror image, points averaged), landmarks (mediapipe mesh: two passes, each on
the patch and its mirror), align (official crop geometry + resampling), pose (template fit +
label). Photos: scikit-image's astronaut (512x512), matplotlib's grace_hopper (512x600) and,
if ../shared/evaldata is present, a few 1280x720 frames of its head turn. Each photo is run
``--repeats`` times after one warm-up pass; the table shows the median over runs, per photo
kind, and the end-to-end total. Thread counts are printed because shared cores change the
numbers a lot (MTCNN runs with 1 torch thread by default, see FaceDetector).

Run: ``python benchmarks/preprocess.py [--repeats 5] [--threads N] [--mirror-average]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for MTCNN (default: the detector's default, 1)")
    parser.add_argument("--evaldata", type=Path, default=REPO.parent / "shared" / "evaldata")
    parser.add_argument("--mirror-average", action="store_true",
                        help="Aligner(mirror_average=True): a second MTCNN pass on the mirror image")
    args = parser.parse_args()

    import matplotlib.cbook
    import skimage.data
    import torch
    from PIL import Image

    from eg3d_invert.preprocessing import Aligner, CropGeometry, crop_face, label_from_rotation

    t0 = time.perf_counter()
    aligner = Aligner(mirror_average=args.mirror_average)
    if args.threads is not None:
        aligner.detector.num_threads = args.threads
    tmp = Path(tempfile.mkdtemp(prefix="eg3d_bench_"))
    try:
        photos = {}
        Image.fromarray(skimage.data.astronaut()).save(tmp / "astronaut.png")
        photos["astronaut 512x512 png"] = [tmp / "astronaut.png"]
        shutil.copy(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), tmp / "grace.jpg")
        photos["grace_hopper 512x600 jpg"] = [tmp / "grace.jpg"]
        frames = sorted((args.evaldata / "headturn" / "photos").glob("frame*.jpg"))[::30]
        if frames:
            photos["evaldata 1280x720 jpg"] = frames
        # warm-up: builds the models and runs every stage once
        for paths in photos.values():
            aligner.align(paths[0])
        setup = time.perf_counter() - t0

        stages = ("read", "detect", "landmarks", "align", "pose")
        rows = {}
        for kind, paths in photos.items():
            times = {s: [] for s in stages}
            for _ in range(args.repeats):
                for path in paths:
                    t = [time.perf_counter()]
                    image = aligner.read(path)
                    t.append(time.perf_counter())
                    face = aligner.detect(image)[0]
                    t.append(time.perf_counter())
                    mesh = aligner.locate_landmarks(image, face)
                    t.append(time.perf_counter())
                    geometry = CropGeometry.from_points(face.points, (image.shape[1], image.shape[0]))
                    crop_face(image, geometry)
                    t.append(time.perf_counter())
                    label_from_rotation(aligner.estimate_rotation(mesh))
                    t.append(time.perf_counter())
                    for s, a, b in zip(stages, t, t[1:]):
                        times[s].append((b - a) * 1000.0)
            rows[kind] = {s: statistics.median(v) for s, v in times.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"torch threads: default {torch.get_num_threads()}, MTCNN "
          f"{aligner.detector.num_threads or torch.get_num_threads()}; cpu count {os.cpu_count()}; "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"mirror average {'on' if aligner.detector.mirror_average else 'off'}")
    print(f"set-up (imports, models, one warm-up pass per photo kind): {setup:.1f} s")
    header = f"{'photo':28s}" + "".join(f"{s:>11s}" for s in stages) + f"{'total':>11s}"
    print(header)
    for kind, r in rows.items():
        total = sum(r.values())
        print(f"{kind:28s}" + "".join(f"{r[s]:9.1f}ms" for s in stages) + f"{total:9.1f}ms"
              + ("" if total < 300 else "  (above the 300 ms target)"))


if __name__ == "__main__":
    main()
