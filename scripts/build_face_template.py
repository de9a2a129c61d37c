#!/usr/bin/env python
"""Build ``eg3d_invert/preprocessing/data/face_template.npz``: the face templates of the pose fit.

Only numbers are written (mean landmark positions and 3 box-mapping constants); no image or
piece of one is stored. Inputs are photos that ship inside installed packages and are free to
use: scikit-image's ``astronaut`` (NASA, public domain) and matplotlib's ``grace_hopper`` sample,
each also mirrored. The evaluation photos in ../shared/evaldata are deliberately *not* used, so
the accuracy measured there is a held-out measurement.

Steps:

1. detect each face (MTCNN) and run mediapipe's face mesh (the package's own code path);
2. find mediapipe's left-right point pairing (mirror the mesh, match points by optimal
   assignment after a rigid alignment seeded with known pairs) so mirrored copies can be added;
3. generalized Procrustes mean of the meshes and their mirrored copies (unit RMS size);
4. place the mean in Deep3DFaceRecon's face frame: similarity fit of its 5 points (eye-corner
   midpoints, nose tip, mouth corners) to D3D's 5 standard 3-D landmarks, then make it exactly
   symmetric about x = 0;
5. for the optional dlib landmarks: the MTCNN-box -> dlib-box mapping (from dlib's own HOG
   detections on the same photos), so the 68-point predictor gets the boxes it was trained on.

Run: ``python scripts/build_face_template.py [--out PATH]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eg3d_invert.preprocessing.crop import REFERENCE_LANDMARKS_3D  # noqa: E402
from eg3d_invert.preprocessing.detection import FaceDetector  # noqa: E402
from eg3d_invert.preprocessing.landmarks import MESH_FIVE, MeshLandmarker, dlib_available, five_points  # noqa: E402
from eg3d_invert.preprocessing.pose import FIT_POINTS, similarity_fit  # noqa: E402
from eg3d_invert.preprocessing.reading import read_image  # noqa: E402

# Pairs known from mediapipe's mesh topology (eye corners, mouth corners, cheek extremes) and
# midline points; they only seed the alignment of step 2, the full pairing is computed.
SEED_PAIRS = [(33, 263), (133, 362), (61, 291), (234, 454), (1, 1), (10, 10), (152, 152)]


def calibration_photos() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    import skimage.data

    photos = {"astronaut": read_image(skimage.data.astronaut()),
              "grace_hopper": read_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))}
    for name in list(photos):
        photos[name + "_mirrored"] = np.ascontiguousarray(photos[name][:, ::-1])
    return photos


def normalize(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0)
    return x / np.sqrt((x ** 2).sum(axis=1).mean())


def mirror_pairing(points: np.ndarray, seeds) -> np.ndarray:
    """perm[i] = index of the point mirroring point i, for one roughly frontal shape ``(N, 3)``."""
    x = normalize(points)
    y = x * np.array([-1.0, 1.0, 1.0])
    a = [p for p, q in seeds] + [q for p, q in seeds]
    b = [q for p, q in seeds] + [p for p, q in seeds]
    c, r, t = similarity_fit(y[b], x[a])
    perm = None
    for _ in range(10):
        if perm is not None:
            c, r, t = similarity_fit(y[perm], x)
        z = c * y @ r.T + t
        cost = ((x[:, None, :] - z[None, :, :]) ** 2).sum(-1)
        _, new = linear_sum_assignment(cost)
        if perm is not None and np.array_equal(new, perm):
            break
        perm = new
    if not np.array_equal(perm[perm], np.arange(len(perm))):
        raise RuntimeError("the mirror pairing is not an involution")
    for p, q in seeds:
        if perm[p] != q:
            raise RuntimeError(f"mirror pairing contradicts the seed pair ({p}, {q})")
    return perm


def procrustes_mean(samples: list[np.ndarray], iterations: int = 20) -> np.ndarray:
    mean = samples[0]
    for _ in range(iterations):
        aligned = []
        for s in samples:
            c, r, t = similarity_fit(s, mean)
            aligned.append(c * s @ r.T + t)
        new = normalize(np.mean(aligned, axis=0))
        if np.abs(new - mean).max() < 1e-10:
            break
        mean = new
    return mean


def mirror(points: np.ndarray, perm: np.ndarray) -> np.ndarray:
    return points[perm] * np.array([-1.0, 1.0, 1.0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "eg3d_invert/preprocessing/data/face_template.npz")
    args = parser.parse_args()

    detector = FaceDetector()
    landmarker = MeshLandmarker(flip_average=False, refine_margin=None)  # mirror pairing computed below
    photos = calibration_photos()
    meshes, meshes_full, detections = {}, {}, {}
    for name, photo in photos.items():
        faces = detector(photo)
        if len(faces) != 1:
            raise RuntimeError(f"{name}: expected one face, found {len(faces)}")
        detections[name] = faces[0]
        meshes_full[name] = landmarker(photo, faces[0].box, flip_average=False)
        meshes[name] = meshes_full[name][:FIT_POINTS]
        print(f"{name}: face score {faces[0].score:.4f}")

    # OpenCV camera axes (y down, z forward) -> face-frame axes (y up, z out of the face)
    to_face = np.diag([1.0, -1.0, -1.0])
    shapes = [normalize(m @ to_face) for m in meshes.values()]
    perm = mirror_pairing(shapes[0], SEED_PAIRS)
    print(f"mirror pairing: {int((perm == np.arange(len(perm))).sum())} points on the midline")
    # The 10 iris points (468-472 and 473-477, centre first): pair the two irises, and inside a
    # ring the point whose mirror image is nearest.
    full = next(iter(meshes_full.values())) @ to_face
    iris_a, iris_b = np.arange(468, 473), np.arange(473, 478)
    ca, cb = full[iris_a], full[iris_b]
    mirrored_b = cb * np.array([-1.0, 1.0, 1.0])
    # express both rings relative to their centres, then match each point of a to the nearest mirrored b
    rel_a = ca - ca[0]
    rel_b = mirrored_b - mirrored_b[0]
    iris_perm = np.empty(10, dtype=np.int64)
    _, match = linear_sum_assignment(((rel_a[:, None, :2] - rel_b[None, :, :2]) ** 2).sum(-1))
    iris_perm[:5] = iris_b[match]
    iris_perm[5:] = iris_a[np.argsort(match)]
    perm_full = np.concatenate([perm, iris_perm])
    if not np.array_equal(perm_full[perm_full], np.arange(478)) or iris_perm[0] != 473:
        raise RuntimeError("iris mirror pairing failed")
    samples = shapes + [normalize(mirror(s, perm)) for s in shapes]
    mean = procrustes_mean(samples)

    five = np.column_stack([five_points(mean, MESH_FIVE), [mean[list(i), 2].mean() for i in MESH_FIVE]])
    c, r, t = similarity_fit(five, REFERENCE_LANDMARKS_3D)
    template = c * mean @ r.T + t
    template = (template + mirror(template, perm)) / 2.0
    five_t = np.column_stack([five_points(template, MESH_FIVE), [template[list(i), 2].mean() for i in MESH_FIVE]])
    print("5-point residual after registration (BFM units):",
          np.round(np.linalg.norm(five_t - REFERENCE_LANDMARKS_3D, axis=1), 4).tolist())

    out = {"mesh": template.astype(np.float32), "mesh_mirror": perm_full.astype(np.int16)}
    meta = {"built": datetime.date.today().isoformat(), "script": "scripts/build_face_template.py",
            "photos": list(photos), "frame": "Deep3DFaceRecon face frame: x subject's left, y up, z out, BFM units",
            "mesh_source": "mediapipe 0.10.21 face_mesh, generalized Procrustes mean + mirrored copies"}

    if dlib_available():
        import dlib

        hog = dlib.get_frontal_face_detector()
        maps = []
        for name, photo in photos.items():
            rects = hog(photo, 1)
            box = detections[name].box
            size = ((box[2] - box[0]) + (box[3] - box[1])) / 2.0
            ctr = detections[name].center
            for rect in rects:
                hc = np.array([(rect.left() + rect.right()) / 2.0, (rect.top() + rect.bottom()) / 2.0])
                if np.linalg.norm(hc - ctr) < 0.5 * size:
                    side = ((rect.right() - rect.left()) + (rect.bottom() - rect.top())) / 2.0
                    maps.append([(hc[0] - ctr[0]) / size, (hc[1] - ctr[1]) / size, side / size])
        if not maps:
            raise RuntimeError("dlib's HOG detector found none of the calibration faces")
        box_map = np.mean(maps, axis=0)
        print(f"dlib box map from {len(maps)} faces: {np.round(box_map, 4).tolist()}")
        out["dlib_box_map"] = box_map.astype(np.float32)
        meta["dlib_box_map_source"] = "dlib HOG frontal face detector boxes vs MTCNN boxes on the same photos"
    else:
        print("dlib or its 68-point model is not available: the dlib box map is left out")

    out["meta"] = np.array(json.dumps(meta))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
