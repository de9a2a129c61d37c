#!/usr/bin/env python
"""Fit ``eg3d_invert/preprocessing/data/pose_model.npz``, the head-pose model, and measure it
person by person on people it was not fitted to.

Only numbers are written (a mean face mesh, principal modes, regression coefficients, 3 box
mapping constants); no image or piece of one is stored. Data (see ``--evaldata``):

* ``calib/``: 21 photos of 20 people (one person has a raw photo beside its crop) with the
  official EG3D in-the-wild labels published by four EG3D projects;
* ``headturn/``: 153 photos of one more person turning the head (-55..+61 deg of yaw), with the
  official labels;
* photos inside installed packages, unlabelled: scikit-image's ``astronaut`` (NASA, public
  domain) gives mediapipe's left-right point pairing; it and matplotlib's ``grace_hopper`` (and
  their mirror images) calibrate the optional dlib box mapping.

Steps: the point pairing; detection and face mesh of every labelled photo (the package's own
code path); leave-one-person-out over the 21 people (each person's errors from a model fitted
without them), printed as a table; the final fit on everyone, written to ``--out``.

Run: ``python scripts/fit_pose_model.py [--evaldata ../shared/evaldata] [--out PATH] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eg3d_invert.preprocessing import pose_fit  # noqa: E402
from eg3d_invert.preprocessing.detection import FaceDetector  # noqa: E402
from eg3d_invert.preprocessing.landmarks import MeshLandmarker, dlib_available  # noqa: E402
from eg3d_invert.preprocessing.reading import read_image  # noqa: E402


def package_photos() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    import skimage.data

    photos = {"astronaut": read_image(skimage.data.astronaut()),
              "grace_hopper": read_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))}
    for name in list(photos):
        photos[name + "_mirrored"] = np.ascontiguousarray(photos[name][:, ::-1])
    return photos


def dlib_box_map(detector, photos) -> np.ndarray | None:
    """MTCNN box -> the box dlib's 68-point predictor was trained with (its HOG detector's)."""
    if not dlib_available():
        return None
    import dlib

    hog = dlib.get_frontal_face_detector()
    maps = []
    for photo in photos.values():
        box = detector(photo)[0].box
        size = ((box[2] - box[0]) + (box[3] - box[1])) / 2.0
        middle = (box[:2] + box[2:]) / 2.0
        for rect in hog(photo, 1):
            centre = np.array([(rect.left() + rect.right()) / 2.0, (rect.top() + rect.bottom()) / 2.0])
            if np.linalg.norm(centre - middle) < 0.5 * size:
                side = ((rect.right() - rect.left()) + (rect.bottom() - rect.top())) / 2.0
                maps.append([(centre[0] - middle[0]) / size, (centre[1] - middle[1]) / size, side / size])
    return np.mean(maps, axis=0) if maps else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evaldata", type=Path, default=REPO.parent / "shared" / "evaldata")
    parser.add_argument("--out", type=Path, default=REPO / "eg3d_invert/preprocessing/data/pose_model.npz")
    parser.add_argument("--modes", type=int, default=pose_fit.DEFAULT_MODES)
    parser.add_argument("--ridge", type=float, default=pose_fit.DEFAULT_RIDGE)
    parser.add_argument("--json", type=Path, help="also write the leave-one-person-out summary here")
    args = parser.parse_args()

    detector = FaceDetector()
    photos = package_photos()
    astronaut = photos["astronaut"]
    raw = MeshLandmarker(flip_average=False, refine_margin=None)
    mirror = pose_fit.mesh_mirror_pairing(raw(astronaut, detector(astronaut)[0].box))
    print(f"mirror pairing: {int((mirror[:468] == np.arange(468)).sum())} of 468 points on the midline")

    landmarker = MeshLandmarker(mirror=mirror)
    samples = pose_fit.calibration_samples(args.evaldata, detector, landmarker)
    people = sorted({s.person for s in samples})
    print(f"{len(samples)} labelled photos of {len(people)} people")

    errors = pose_fit.leave_one_person_out(samples, mirror, modes=args.modes, ridge=args.ridge)
    summary = pose_fit.summarize(errors)
    print("\nleave-one-person-out (each person's errors from a model fitted without them), degrees:")
    print(pose_fit.format_summary(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))

    box_map = dlib_box_map(detector, photos)
    meta = {"built": datetime.date.today().isoformat(), "script": "scripts/fit_pose_model.py",
            "data": {"calib": "evaldata/calib: 21 photos of 20 people, official EG3D in-the-wild labels "
                              "published by FaceDNeRF, triplane_edit, lite2relight, 3D-GAN-Inversion",
                     "headturn": "evaldata/headturn: 153 photos of one person, official labels",
                     "package_photos": "skimage astronaut (point pairing); astronaut and matplotlib "
                                       "grace_hopper with mirror images (dlib box map)"},
            "frame": "EG3D world = Deep3DFaceRecon face frame: x subject's left, y up, z out, BFM units",
            "mesh_source": "mediapipe 0.10.21 face_mesh, flip-averaged two-pass patches",
            "leave_one_person_out": {k: summary[k] for k in ("per_person", "per_photo")}}
    model = pose_fit.fit_pose_model(samples, mirror, modes=args.modes, ridge=args.ridge,
                                    dlib_box_map=box_map, meta=meta)
    fit_set = pose_fit.summarize(
        pose_fit.PoseError(s.person, s.source, *s.official_angles, *pose_fit.estimate(model, s)) for s in samples)
    print("\nfinal model on its own fitting data (not a generalisation figure):")
    print(pose_fit.format_summary(fit_set).splitlines()[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
