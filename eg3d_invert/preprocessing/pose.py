"""Head pose from landmarks, and the EG3D camera label built the way the official scripts build it.

Model
-----
The official labels come from Deep3DFaceRecon (D3D): a Basel-face-model fit gives the head
rotation ``R_f`` (face frame -> D3D camera, y up, camera on +z) and a translation; NVlabs'
``3dface2idr_mat.py`` + ``preprocess_face_cameras.py --mode orig`` turn them into a label. Here
the rotation is estimated instead from mediapipe's 3-D face mesh with a :class:`PoseModel`
fitted to official labels of many people (:mod:`.pose_fit`, ``scripts/fit_pose_model.py``):

1. **Rigid fit.** The model's 468-point mean face (in EG3D's world frame = D3D's face frame:
   x toward the subject's left, y up, z out of the face) is fitted to the mesh by a
   least-squares similarity (Umeyama). The mesh is in OpenCV camera axes (x right, y down,
   z forward), so the fitted rotation ``Q`` maps face to OpenCV camera; a frontal face gives
   ``Q = diag(1, -1, -1)`` and ``R_f = diag(1, -1, -1) Q``. The mean face was built from meshes
   put into the official frame by their official labels, so "level" and "frontal" mean what
   they mean in the official labels on average over the people it was fitted on, not what two
   hand-picked faces suggest.
2. **Pitch correction.** How far a face looks up or down depends on its proportions, which
   differ between people and which D3D reads through its own face model. The part of a
   person's shape the rigid fit leaves (its left-right symmetric residual, projected on a few
   principal modes) and the nod that registers the person's 5 points to D3D's 5 standard 3-D
   landmarks predict, linearly, the pitch the official pipeline gives minus the rigid fit's.
   Yaw and roll get no correction: the mean face is left-right symmetric, so a mirrored photo
   gives the mirrored pose exactly, and nothing in the data asked for one.
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

Accuracy, measured person by person with each person's error from a model fitted without them
(``benchmarks/pose.py``), is in the README; :func:`pose_warnings` says when not to trust a pose.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
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
#: Weights of the 5 points (eyes, nose, mouth corners) in the nod registration: the mouth
#: corners move with expression (a smile lifts them and pulls them back), so they count half.
REGISTRATION_WEIGHTS = (1.0, 1.0, 1.0, 0.5, 0.5)
#: D3D's 5 standard landmarks made exactly left-right symmetric (they are to 2e-3), so that the
#: nod of a mirrored face is the same nod.
SYMMETRIC_LANDMARKS_3D = (np.asarray(REFERENCE_LANDMARKS_3D, dtype=np.float64)
                          + np.asarray(REFERENCE_LANDMARKS_3D, dtype=np.float64)[[1, 0, 2, 4, 3]] * [-1, 1, 1]) / 2
#: Number of mediapipe mesh points used by the fit (the 10 iris points are left out).
FIT_POINTS = 468
#: Beyond these the pose is flagged by :func:`pose_warnings` (degrees; EG3D's FFHQ training
#: cameras stay within about +-40 degrees of yaw and +-25 of pitch, and its crops are upright).
MAX_TRUSTED_YAW = 40.0
MAX_TRUSTED_PITCH = 25.0
MAX_TRUSTED_ROLL = 15.0
#: Detector confidence under which the face may be partly hidden, blurred or not a face.
MIN_TRUSTED_SCORE = 0.98


@dataclass(frozen=True, eq=False)
class PoseModel:
    """What the pose estimate needs, fitted by :func:`eg3d_invert.preprocessing.pose_fit.fit_pose_model`.

    Attributes:
        mesh: ``(468, 3)`` mean mediapipe mesh in EG3D's world frame (module docstring), BFM
            units, left-right symmetric about x = 0.
        mesh_mirror: ``(478,)`` index of each mediapipe point's mirror partner (iris points included).
        shape_mean: ``(1404,)`` mean symmetric shape residual (flattened ``(468, 3)``).
        shape_modes: ``(K, 1404)`` principal modes of the residual (orthonormal rows).
        feature_mean, feature_scale: ``(K + 1,)`` standardisation of the features (K mode
            coefficients, then the nod in degrees).
        pitch_coef: ``(K + 2,)`` linear pitch correction (degrees) on the standardised features,
            intercept last.
        dlib_box_map: ``(3,)`` MTCNN-box -> dlib-box mapping (see ``DlibLandmarker``), or ``None``.
        meta: provenance of the numbers (data, script, settings).
    """

    mesh: np.ndarray
    mesh_mirror: np.ndarray
    shape_mean: np.ndarray
    shape_modes: np.ndarray
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    pitch_coef: np.ndarray
    dlib_box_map: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        k = self.shape_modes.shape[0] if self.shape_modes.ndim == 2 else -1
        checks = {"mesh": (self.mesh.shape, (FIT_POINTS, 3)), "mesh_mirror": (self.mesh_mirror.shape, (478,)),
                  "shape_mean": (self.shape_mean.shape, (FIT_POINTS * 3,)),
                  "shape_modes": (self.shape_modes.shape, (k, FIT_POINTS * 3)),
                  "feature_mean": (self.feature_mean.shape, (k + 1,)),
                  "feature_scale": (self.feature_scale.shape, (k + 1,)),
                  "pitch_coef": (self.pitch_coef.shape, (k + 2,))}
        for name, (got, want) in checks.items():
            if got != want:
                raise ValueError(f"pose model {name} must be {want}, got {got}")
        if not np.array_equal(self.mesh_mirror[self.mesh_mirror], np.arange(478)):
            raise ValueError("pose model mesh_mirror must be a pairing (an involution) of the mesh points")
        if not np.all(self.feature_scale > 0):
            raise ValueError("pose model feature_scale must be positive")

    @property
    def mirror_fit(self) -> np.ndarray:
        """``(468,)`` mirror partners among the fitted mesh points."""
        return self.mesh_mirror[:FIT_POINTS]

    _ARRAYS = ("mesh", "mesh_mirror", "shape_mean", "shape_modes", "feature_mean", "feature_scale", "pitch_coef")

    @classmethod
    def load(cls, path=None) -> "PoseModel":
        """Load a model ``.npz`` (default: the one shipped in the package)."""
        if path is None:
            ref = resources.files("eg3d_invert.preprocessing") / "data" / "pose_model.npz"
            with resources.as_file(ref) as p, np.load(p) as f:
                data = {k: f[k] for k in f.files}
        else:
            with np.load(path) as f:
                data = {k: f[k] for k in f.files}
        missing = [k for k in cls._ARRAYS if k not in data]
        if missing:
            raise ValueError(f"pose model file lacks {', '.join(missing)}")
        arrays = {k: data[k].astype(np.int64 if k == "mesh_mirror" else np.float64) for k in cls._ARRAYS}
        box_map = data["dlib_box_map"].astype(np.float64) if "dlib_box_map" in data else None
        meta = json.loads(str(data["meta"])) if "meta" in data else {}
        return cls(**arrays, dlib_box_map=box_map, meta=meta)

    def save(self, path) -> None:
        """Write the model as ``.npz`` (float32 numbers, metadata as JSON)."""
        out = {k: getattr(self, k).astype(np.int16 if k == "mesh_mirror" else np.float32) for k in self._ARRAYS}
        if self.dlib_box_map is not None:
            out["dlib_box_map"] = np.asarray(self.dlib_box_map, dtype=np.float32)
        out["meta"] = np.array(json.dumps(self.meta, sort_keys=True))
        np.savez_compressed(path, **out)

    def features(self, own: np.ndarray) -> np.ndarray:
        """Raw features ``(K + 1,)`` of a face mesh ``own`` ``(468, 3)`` already in the model's
        frame (the rigid fit undone): mode coefficients of its symmetric residual, then the nod."""
        residual = own - self.mesh
        symmetric = (residual + residual[self.mirror_fit] * [-1.0, 1.0, 1.0]) / 2.0
        coefficients = self.shape_modes @ (symmetric.reshape(-1) - self.shape_mean)
        return np.append(coefficients, nod_angle(own))

    def pitch_correction(self, own: np.ndarray) -> float:
        """Degrees to add to the rigid fit's pitch for the face ``own`` (see :meth:`features`)."""
        z = (self.features(own) - self.feature_mean) / self.feature_scale
        return float(z @ self.pitch_coef[:-1] + self.pitch_coef[-1])


@functools.lru_cache(maxsize=1)
def default_pose_model() -> PoseModel:
    return PoseModel.load()


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


def nod_angle(own: np.ndarray) -> float:
    """Nod (degrees, about the face's x axis) that registers a face's 5 points, in the face frame,
    to D3D's 5 standard 3-D landmarks (made symmetric): D3D's own idea of a level face."""
    five = np.column_stack([five_points(own[:, :2], MESH_FIVE),
                            [own[list(idx), 2].mean() for idx in MESH_FIVE]])
    _, reg, _ = similarity_fit(SYMMETRIC_LANDMARKS_3D, five, REGISTRATION_WEIGHTS)
    return float(np.degrees(np.arctan2(reg[2, 1], reg[2, 2])))


def rigid_fit(mesh, model: PoseModel | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Step 1 alone: ``(Q, own)``: rotation face -> OpenCV camera ``(3, 3)`` of the mean face fitted
    to ``mesh``, and the mesh brought into the model's frame by undoing that fit ``(468, 3)``."""
    model = model or default_pose_model()
    pts = np.asarray(mesh, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < FIT_POINTS or pts.shape[1] != 3:
        raise ValueError(f"mesh must be (>= {FIT_POINTS}, 3), got {pts.shape}")
    pts = pts[:FIT_POINTS]
    c, q, t = similarity_fit(model.mesh, pts)
    return q, (pts - t) @ q / c


def fit_mesh_rotation(mesh, model: PoseModel | None = None) -> np.ndarray:
    """Head rotation ``Q`` ``(3, 3)`` (face frame -> OpenCV camera) from a mediapipe mesh.

    Args:
        mesh: ``(>=468, 3)`` landmarks in pixels, OpenCV axes (x right, y down, z forward), as
            returned by :class:`~eg3d_invert.preprocessing.landmarks.MeshLandmarker`.
        model: default: the packaged model.
    """
    model = model or default_pose_model()
    q, own = rigid_fit(mesh, model)
    return q @ rot_x(np.radians(model.pitch_correction(own)))


def pose_warnings(yaw: float, pitch: float, roll: float, score: float, mesh, photo_size) -> tuple[str, ...]:
    """Reasons not to trust a pose, each ``"<kind>: <message>"`` (kinds: yaw, pitch, roll, border, score).

    Args:
        yaw, pitch, roll: degrees, as :class:`~eg3d_invert.preprocessing.aligner.AlignedFace`.
        score: detector confidence.
        mesh: ``(>=468, 2+)`` face mesh in photo pixels.
        photo_size: ``(W, H)``.
    """
    out = []
    if abs(yaw) > MAX_TRUSTED_YAW:
        out.append(f"yaw: {yaw:+.0f} deg is beyond EG3D's training range (+-{MAX_TRUSTED_YAW:.0f}); "
                   "pose and 3D shape are less reliable")
    if abs(pitch) > MAX_TRUSTED_PITCH:
        out.append(f"pitch: {pitch:+.0f} deg is beyond EG3D's training range (+-{MAX_TRUSTED_PITCH:.0f}); "
                   "pose and 3D shape are less reliable")
    if abs(roll) > MAX_TRUSTED_ROLL:
        out.append(f"roll: the head is tilted {roll:+.0f} deg in the photo (EG3D's training faces are "
                   f"within about +-{MAX_TRUSTED_ROLL:.0f}); straighten the photo for a better result")
    pts = np.asarray(mesh, dtype=np.float64)[:FIT_POINTS, :2]
    width, height = photo_size
    margin = 0.02 * float(np.ptp(pts[:, 1]))  # mediapipe places hidden points slightly outside
    outside = (pts[:, 0] < -margin) | (pts[:, 1] < -margin) | (pts[:, 0] > width - 1 + margin) \
        | (pts[:, 1] > height - 1 + margin)
    if outside.any():
        out.append(f"border: the face is cut by the photo's border ({100.0 * outside.mean():.0f}% of its "
                   "landmarks fall outside); pose and crop are guessed for the missing part")
    if score < MIN_TRUSTED_SCORE:
        out.append(f"score: low detection confidence {score:.3f}; the face may be covered, blurred or not a face")
    return tuple(out)


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
