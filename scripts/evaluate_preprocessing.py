#!/usr/bin/env python
"""Measure the preprocessing against the official EG3D results in ../shared/evaldata.

Reports, over the photos of ``evaldata/index.json``:

* crop: mean absolute difference (x255) between our crop and the official crop, once with the
  official MTCNN points (tests the crop math) and once end to end with our detector (MTCNN's
  points, or with ``--mirror-average`` those averaged with the mirror image's);
* 5 points (from MTCNN, from the mediapipe mesh, from dlib if installed): distance from the
  official MTCNN points (pixels) and the resulting crop offsets;
* pose: median / 90th percentile / max absolute yaw and pitch error against the official labels.

The pose model is fitted to these photos among others (scripts/fit_pose_model.py), so the pose
errors here are fit-set figures; benchmarks/pose.py measures generalisation to other people.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eg3d_invert.camera import label_angles  # noqa: E402
from eg3d_invert.preprocessing import Aligner, CropGeometry, crop_face, dlib_available, read_image  # noqa: E402
from eg3d_invert.preprocessing.landmarks import MESH_FIVE, five_points  # noqa: E402


def stats(e) -> str:
    e = np.abs(np.asarray(e))
    return f"median {np.median(e):.2f}  p90 {np.percentile(e, 90):.2f}  max {e.max():.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evaldata", type=Path, default=REPO.parent / "shared" / "evaldata")
    parser.add_argument("--every", type=int, default=1, help="use every n-th photo")
    parser.add_argument("--json", type=Path, help="also write per-photo numbers here")
    parser.add_argument("--mirror-average", action="store_true",
                        help="average MTCNN's points with the mirror image's (Aligner(mirror_average=True))")
    args = parser.parse_args()

    items = [it for it in json.loads((args.evaldata / "index.json").read_text())["items"] if it["kind"] == "original"]
    items = items[::args.every]
    aligner = Aligner(mirror_average=args.mirror_average)
    dlib = Aligner(five_points="dlib", mirror_average=args.mirror_average) if dlib_available() else None
    rows = []
    t0 = time.time()
    for it in items:
        photo = read_image(args.evaldata / it["image"])
        official_pts = np.loadtxt(args.evaldata / it["mtcnn_5pt_official"])
        crop_path = (args.evaldata / it["image"].replace("photos", "crop")).with_suffix(".png")
        official_crop = np.asarray(Image.open(crop_path).convert("RGB"), dtype=np.int16)
        g = CropGeometry.from_points(official_pts, (photo.shape[1], photo.shape[0]))
        og = g.photo_to_crop
        row = {"image": it["image"], "yaw": it["yaw_deg"], "pitch": it["pitch_deg"],
               "crop_official_points": float(np.abs(crop_face(photo, g) - official_crop).mean())}
        faces = aligner.detect(photo)
        face = aligner.align_detection(photo, faces[0])
        y, p = label_angles(np.asarray(face.label)[None])
        row.update(est_yaw=float(y[0]), est_pitch=float(p[0]), roll=face.roll)
        sources = {"detector": face.points, "mesh": five_points(face.landmarks, MESH_FIVE)}
        if dlib is not None:
            sources["dlib"] = dlib.crop_points(photo, faces[0], face.landmarks)[0]
        for name, pts in sources.items():
            gm = CropGeometry.from_points(pts, (photo.shape[1], photo.shape[0]))
            row[f"{name}_point_offset"] = float(np.linalg.norm(pts - official_pts, axis=1).max())
            row[f"{name}_crop_diff"] = float(np.abs(crop_face(photo, gm) - official_crop).mean())
            row[f"{name}_crop_shift"] = float(np.abs(gm.photo_to_crop[:, 2] - og[:, 2]).max())
            row[f"{name}_crop_scale"] = float(gm.photo_to_crop[0, 0] / og[0, 0])
        rows.append(row)
    print(f"{len(rows)} photos in {time.time() - t0:.1f} s; MTCNN points "
          f"{'averaged with the mirror image' if args.mirror_average else 'as they are'}")
    col = lambda k: np.array([r[k] for r in rows])  # noqa: E731
    print(f"crop with the official points vs official crop: mean abs diff x255 {stats(col('crop_official_points'))}")
    for name in ("detector", "mesh", "dlib"):
        if f"{name}_point_offset" not in rows[0]:
            continue
        print(f"5 points from {name}:")
        print(f"  farthest point from the official one (px)   {stats(col(f'{name}_point_offset'))}")
        print(f"  crop mean abs diff x255 vs official crop    {stats(col(f'{name}_crop_diff'))}")
        print(f"  crop shift (512-crop px)                     {stats(col(f'{name}_crop_shift'))}")
        sc = col(f"{name}_crop_scale")
        print(f"  crop scale ratio                             {sc.min():.4f} .. {sc.max():.4f} (median {np.median(sc):.4f})")
    for k in ("yaw", "pitch"):
        e = col(f"est_{k}") - col(k)
        print(f"{k:5s} error (deg): {stats(e)}  bias {e.mean():+.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
