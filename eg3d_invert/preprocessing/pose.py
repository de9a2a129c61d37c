"""Head pose from landmarks, and the EG3D camera label built the way the official scripts build it.

Model
-----
The official labels come from Deep3DFaceRecon (D3D): a Basel-face-model fit gives the head
rotation ``R_f`` (face frame -> D3D camera, y up, camera on +z) and a translation; NVlabs'
``3dface2idr_mat.py`` + ``preprocess_face_cameras.py --mode orig`` turn them into a label. Here
the rotation is estimated instead from mediapipe's 3-D face mesh:

1. **Rigid fit.** A 468-point face template (:class:`FaceTemplate`, in D3D's face frame: x toward
   the subject's left, y up, z out of the face, BFM units) is fitted to the mesh by a
   least-squares similarity (Umeyama). The mesh is in OpenCV camera axes (x right, y down,
   z forward), so the fitted rotation ``Q`` maps face to OpenCV camera; a frontal face gives
   ``Q = diag(1, -1, -1)`` and ``R_f = diag(1, -1, -1) Q``.
2. **Frame registration, per person.** Where "level" is for a face is a convention of the face
   model: D3D's is the frame of its 5 standard 3-D landmarks (eye centres, nose tip, mouth
   corners; ``crop.REFERENCE_LANDMARKS_3D``). The person's own mesh, brought into the template
   frame by step 1, is registered to those 5 landmarks with a similarity (mouth corners at half
   weight, as they move with expression), and the rotation of
   that registration about the face's x axis (the nod angle) is applied to ``Q``. This makes
   the pitch independent of how the template itself is tilted, and follows each face's own
   proportions (a face with a deeper-set mouth is not read as a nod). Yaw and roll come from
   the full-mesh fit alone (the template is left-right symmetric, so a mirrored photo gives the
   mirrored pose exactly).
3. **Label**, exactly as the official conversion with the face origin on D3D's optical axis at
   its distance 10: camera centre ``C = 0.27 * R_f^T (0, 0, 10) + (0, 0.006, 0.161)`` (the fixed
   offset "used in submission"), then ``C <- 2.7 C / |C|`` (radius normalized about the origin,
   rotation unchanged), ``cam2world = [[R_f^T diag(1, -1, -1), C], [0, 0, 0, 1]]``, intrinsics
   ``[[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]]``. ``R_f^T diag(1, -1, -1) = Q^T``.

The offset means the camera does not sit exactly on its own optical axis: at 60 degrees of head
turn it lowers the label's geometric yaw by about 3 degrees compared with ignoring it.

Angles reported (degrees): ``yaw`` and ``pitch`` of the camera centre as
:func:`eg3d_invert.camera.label_angles` (positive yaw: camera toward the subject's left, face
turned toward the image left; positive pitch: camera above the head), and ``roll``: the
in-image tilt of the head, positive when the top of the head leans toward the image right.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ..camera import FFHQ_FOCAL, FFHQ_RADIUS
from .crop import REFERENCE_LANDMARKS_3D
from .landmarks import MESH_FIVE, five_points

#: D3D's camera distance, the scale ``3dface2idr_mat.py`` applies, and its fixed centre offset.
D3D_CAMERA_DISTANCE = 10.0
D3D_TO_EG3D_SCALE = 0.27
D3D_CAMERA_OFFSET = (0.0, 0.006, 0.161)
#: OpenCV camera axes <-> D3D/OpenGL camera axes.
FLIP_YZ = np.diag([1.0, -1.0, -1.0])
#: Weights of the 5 points (eyes, nose, mouth corners) in the per-face frame registration: the
#: mouth corners move with expression (a smile lifts them and pulls them back, which would read
#: as a nod), so they count half.
REGISTRATION_WEIGHTS = (1.0, 1.0, 1.0, 0.5, 0.5)
#: Number of mediapipe mesh points used by the fit (the 10 iris points are left out).
FIT_POINTS = 468


@dataclass(frozen=True)
class FaceTemplate:
    """Face templates in D3D's face frame (see module docstring), built by
    ``scripts/build_face_template.py``.

    Attributes:
        mesh: ``(468, 3)`` mean mediapipe mesh, left-right symmetric about x = 0.
        mesh_mirror: ``(478,)`` index of each mediapipe point's mirror partner (iris points included).
        dlib_box_map: ``(3,)`` MTCNN-box -> dlib-box mapping (see ``DlibLandmarker``), or ``None``.
        meta: provenance of the numbers.
    """

    mesh: np.ndarray
    mesh_mirror: np.ndarray
    dlib_box_map: np.ndarray | None
    meta: dict

    @classmethod
    def load(cls, path=None) -> "FaceTemplate":
        """Load a template ``.npz`` (default: the one shipped in the package)."""
        if path is None:
            ref = resources.files("eg3d_invert.preprocessing") / "data" / "face_template.npz"
            with resources.as_file(ref) as p, np.load(p) as f:
                data = {k: f[k] for k in f.files}
        else:
            with np.load(path) as f:
                data = {k: f[k] for k in f.files}
        mesh = data["mesh"].astype(np.float64)
        if mesh.shape != (FIT_POINTS, 3):
            raise ValueError(f"template mesh must be ({FIT_POINTS}, 3), got {mesh.shape}")
        box_map = data["dlib_box_map"].astype(np.float64) if "dlib_box_map" in data else None
        meta = json.loads(str(data["meta"])) if "meta" in data else {}
        mirror = data["mesh_mirror"].astype(np.int64)
        if mirror.shape != (478,) or not np.array_equal(mirror[mirror], np.arange(478)):
            raise ValueError("template mesh_mirror must be a pairing (an involution) of the mesh points")
        return cls(mesh, mirror, box_map, meta)


@functools.lru_cache(maxsize=1)
def default_template() -> FaceTemplate:
    return FaceTemplate.load()


def similarity_fit(src: np.ndarray, dst: np.ndarray, weights=None) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted least-squares similarity ``dst ~ c R src + t`` (Umeyama 1991), no reflection.

    Args:
        src, dst: ``(N, 3)`` corresponding points.
        weights: ``(N,)`` non-negative, or ``None`` for equal weights.

    Returns:
        ``(c, R, t)``: scale, ``(3, 3)`` rotation with det +1, ``(3,)`` translation.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"src and dst must both be (N, 3), got {src.shape} and {dst.shape}")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    ms, md = w @ src, w @ dst
    s, d = src - ms, dst - md
    cov = (w[:, None] * d).T @ s
    u, sig, vt = np.linalg.svd(cov)
    e = np.ones(3)
    e[2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    r = (u * e) @ vt
    var = float(w @ (s ** 2).sum(axis=1))
    c = float((sig * e).sum() / var) if var > 0 else 1.0
    return c, r, md - c * r @ ms


def rot_x(angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians about x ``(3, 3)``."""
    ca, sa = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, ca, -sa], [0.0, sa, ca]])


def fit_mesh_rotation(mesh, template: FaceTemplate | None = None) -> np.ndarray:
    """Head rotation ``Q`` ``(3, 3)`` (face frame -> OpenCV camera) from a mediapipe mesh.

    Args:
        mesh: ``(>=468, 3)`` landmarks in pixels, OpenCV axes (x right, y down, z forward), as
            returned by :class:`~eg3d_invert.preprocessing.landmarks.MeshLandmarker`.
        template: default: the packaged template.
    """
    template = template or default_template()
    pts = np.asarray(mesh, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < FIT_POINTS or pts.shape[1] != 3:
        raise ValueError(f"mesh must be (>= {FIT_POINTS}, 3), got {pts.shape}")
    pts = pts[:FIT_POINTS]
    c, q, t = similarity_fit(template.mesh, pts)
    # Step 2: register the person's own mesh (in the template frame) to D3D's 5 landmarks and
    # keep the nod component of that registration.
    own = (pts - t) @ q / c
    five = np.column_stack([five_points(own[:, :2], MESH_FIVE), _five_z(own)])
    _, reg, _ = similarity_fit(REFERENCE_LANDMARKS_3D, five, REGISTRATION_WEIGHTS)
    nod = np.arctan2(reg[2, 1], reg[2, 2])
    return q @ rot_x(nod)


def _five_z(points3d: np.ndarray) -> np.ndarray:
    return np.array([points3d[list(idx), 2].mean() for idx in MESH_FIVE])


def label_from_rotation(rotation, focal: float = FFHQ_FOCAL) -> np.ndarray:
    """EG3D label ``(25,)`` float64 from a head rotation ``Q`` (face -> OpenCV camera).

    Follows the official conversion (module docstring, step 3) with the face origin on D3D's
    optical axis.
    """
    q = np.asarray(rotation, dtype=np.float64)
    if q.shape != (3, 3):
        raise ValueError(f"rotation must be (3, 3), got {q.shape}")
    r_c2w = q.T  # = R_f^T diag(1,-1,-1) with R_f = diag(1,-1,-1) Q
    r_f = FLIP_YZ @ q
    centre = D3D_TO_EG3D_SCALE * (r_f.T @ np.array([0.0, 0.0, D3D_CAMERA_DISTANCE]))
    centre = centre + np.asarray(D3D_CAMERA_OFFSET)
    centre = FFHQ_RADIUS * centre / np.linalg.norm(centre)
    pose = np.eye(4)
    pose[:3, :3] = r_c2w
    pose[:3, 3] = centre
    intrinsics = np.array([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]])
    return np.concatenate([pose.reshape(-1), intrinsics.reshape(-1)])


def rotation_from_label(label) -> np.ndarray:
    """Inverse of :func:`label_from_rotation` for the rotation part: ``Q = R_c2w^T``."""
    lab = np.asarray(label, dtype=np.float64).reshape(-1)
    if lab.shape != (25,):
        raise ValueError(f"a label has 25 numbers, got {lab.shape}")
    return lab[:16].reshape(4, 4)[:3, :3].T


def label_roll(label) -> float:
    """In-image head tilt (degrees) of a label: positive when the top of the head leans image-right."""
    r = np.asarray(label, dtype=np.float64).reshape(-1)[:16].reshape(4, 4)[:3, :3]
    # world up (+y) seen in the camera image is (r[1, 0], r[1, 1]); upright is (0, -1)
    return float(np.degrees(np.arctan2(r[1, 0], -r[1, 1])))
