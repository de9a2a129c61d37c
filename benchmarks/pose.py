#!/usr/bin/env python
"""Head pose on people the model was not fitted to: leave-one-person-out over the 21 labelled
people of ../shared/evaldata (20 in ``calib/``, one in the head turn).

For each person, the pose model is refitted without them (``eg3d_invert.preprocessing.pose_fit``,
the same code and settings as ``scripts/fit_pose_model.py``) and their photos are estimated with
it; the table gives each person's photo count, yaw/pitch range and absolute errors against the
official labels, then median / p90 / max over people (each person's median error, so the
153-photo head turn counts once) and over all photos (the worst photo). The shipped model's
own-data figures are printed last for comparison; they are not generalisation figures.

Run: ``python benchmarks/pose.py [--headturn-every 1] [--modes 3] [--ridge 1.0] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evaldata", type=Path, default=REPO.parent / "shared" / "evaldata")
    parser.add_argument("--headturn-every", type=int, default=1, help="use every n-th head-turn photo")
    parser.add_argument("--modes", type=int, default=None, help="principal modes of the pitch correction")
    parser.add_argument("--ridge", type=float, default=None, help="ridge penalty of the pitch correction")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()

    from eg3d_invert.preprocessing import pose_fit
    from eg3d_invert.preprocessing.detection import FaceDetector
    from eg3d_invert.preprocessing.landmarks import MeshLandmarker
    from eg3d_invert.preprocessing.pose import default_pose_model

    model = default_pose_model()
    t0 = time.perf_counter()
    samples = pose_fit.calibration_samples(args.evaldata, FaceDetector(), MeshLandmarker(mirror=model.mesh_mirror),
                                           headturn_every=args.headturn_every)
    t1 = time.perf_counter()
    fit = {k: v for k, v in (("modes", args.modes), ("ridge", args.ridge)) if v is not None}
    summary = pose_fit.summarize(pose_fit.leave_one_person_out(samples, model.mesh_mirror, **fit))
    print(f"{len(samples)} photos of {len(summary['people'])} people; meshes {t1 - t0:.0f} s, "
          f"21 fits {time.perf_counter() - t1:.1f} s; fit settings "
          f"modes={fit.get('modes', pose_fit.DEFAULT_MODES)} ridge={fit.get('ridge', pose_fit.DEFAULT_RIDGE)}")
    print("leave-one-person-out, absolute errors against the official labels (degrees):")
    print(pose_fit.format_summary(summary))
    own = pose_fit.summarize(pose_fit.PoseError(s.person, s.source, *s.official_angles, *pose_fit.estimate(model, s))
                             for s in samples)
    print("shipped model on its own fitting data (not a generalisation figure):")
    print("\n".join(pose_fit.format_summary(own).splitlines()[-2:]))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
