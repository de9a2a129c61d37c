"""One call from a portrait photo to the EG3D crop and camera label: :func:`align` / :class:`Aligner`."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..camera import label_angles
from ..errors import FaceIndexError, NoFaceError
from .crop import CropGeometry, Padding, apply_affine, crop_face
from .detection import DEFAULT_THRESHOLD, Detection, FaceDetector, auto_min_face_size
from .landmarks import DLIB_FIVE, MESH_FIVE, DlibLandmarker, MeshLandmarker, five_points
from .pose import PoseModel, default_pose_model, fit_mesh_rotation, label_from_rotation, label_roll, pose_warnings
from .reading import DEFAULT_MAX_PIXELS, ImageSource, read_image, source_name

FivePointSource = Literal["detector", "mesh", "dlib"]


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """A face cut out the way EG3D's FFHQ data were, with its camera label.

    Coordinates are pixels with OpenCV's convention (centre of the top-left pixel at ``(0, 0)``,
    x right, y down); "photo" means the photo after EXIF orientation.

    Attributes:
        image: ``(512, 512, 3)`` uint8 RGB crop.
        label: ``(25,)`` float64 EG3D label: OpenCV cam2world (row-major 4x4), then normalized
            intrinsics (row-major 3x3), official FFHQ convention (radius 2.7, focal 4.2647).
        yaw, pitch, roll: degrees (``pitch``/``yaw`` of the camera centre, positive yaw = camera
            toward the subject's left; positive pitch = camera above; positive roll = top of the
            head toward the image right).
        landmarks: ``(478, 3)`` mediapipe face mesh in the photo: x, y pixels and z, a relative
            depth in the same pixel scale (positive away from the camera).
        landmarks_crop: ``(478, 2)`` the mesh's x, y in crop pixels.
        points: ``(5, 2)`` the 5 points that placed the crop (photo pixels, MTCNN order).
        points_crop: the same in crop pixels.
        box: ``(4,)`` detection box ``(x0, y0, x1, y1)`` in the photo.
        score: detector confidence.
        num_faces: faces found above the threshold in the photo.
        face_index: rank of this face (0 = largest ``width + height``).
        photo_to_crop, crop_to_photo: ``(2, 3)`` affine transforms between the two pixel frames.
        geometry: the official crop parameters.
        photo_size: ``(W, H)`` of the photo.
        source: where the photo came from (path or a description).
        point_source: which 5 points placed the crop: ``"detector"`` (MTCNN), ``"mesh"``, ``"dlib"``.
        landmarks68: ``(68, 2)`` dlib points in the photo when ``point_source == "dlib"``, else ``None``.
        pose_warnings: reasons not to trust the pose (empty when none), each
            ``"<kind>: <message>"`` with kind ``yaw``, ``pitch``, ``roll`` (beyond EG3D's training
            range), ``border`` (face cut by the photo's border) or ``score`` (low detector
            confidence); see :func:`~eg3d_invert.preprocessing.pose.pose_warnings`.
    """

    image: np.ndarray
    label: np.ndarray
    yaw: float
    pitch: float
    roll: float
    landmarks: np.ndarray
    landmarks_crop: np.ndarray
    points: np.ndarray
    points_crop: np.ndarray
    box: np.ndarray
    score: float
    num_faces: int
    face_index: int
    photo_to_crop: np.ndarray
    crop_to_photo: np.ndarray
    geometry: CropGeometry
    photo_size: tuple[int, int]
    source: str
    point_source: str = "detector"
    landmarks68: np.ndarray | None = None
    pose_warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready description of everything but the image."""
        r = lambda a, n=4: np.round(np.asarray(a, dtype=np.float64), n).tolist()  # noqa: E731
        return {
            "source": self.source,
            "label": [float(v) for v in self.label],
            "yaw": round(self.yaw, 3), "pitch": round(self.pitch, 3), "roll": round(self.roll, 3),
            "score": round(self.score, 6), "num_faces": self.num_faces, "face_index": self.face_index,
            "box": r(self.box, 2), "points": r(self.points, 3), "points_crop": r(self.points_crop, 3),
            "point_source": self.point_source,
            "landmarks": r(self.landmarks, 2), "landmarks_crop": r(self.landmarks_crop, 2),
            **({"landmarks68": r(self.landmarks68, 2)} if self.landmarks68 is not None else {}),
            "photo_size": list(self.photo_size),
            "photo_to_crop": r(self.photo_to_crop, 8), "crop_to_photo": r(self.crop_to_photo, 8),
            "crop_geometry": self.geometry.to_dict(),
            "pose_warnings": list(self.pose_warnings),
        }

    @classmethod
    def from_dict(cls, d: dict, image: np.ndarray) -> "AlignedFace":
        """Rebuild from :meth:`to_dict` and the crop ``(512, 512, 3)`` uint8. The label is exact;
        landmarks, points and transforms keep the precision they were written with (2-8 decimals).

        Raises KeyError / TypeError / ValueError on an incomplete or malformed record.
        """
        g = d["crop_geometry"]
        geometry = CropGeometry(tuple(int(v) for v in g["photo_size"]), float(g["scale"]),
                                tuple(int(v) for v in g["resized_size"]), tuple(int(v) for v in g["align_box"]),
                                tuple(float(v) for v in g["pos_translation"]), float(g["pos_scale"]))

        def arr(key):
            return np.asarray(d[key], dtype=np.float64)

        return cls(
            image=image, label=arr("label"), yaw=float(d["yaw"]), pitch=float(d["pitch"]), roll=float(d["roll"]),
            landmarks=arr("landmarks"), landmarks_crop=arr("landmarks_crop"), points=arr("points"),
            points_crop=arr("points_crop"), box=arr("box"), score=float(d["score"]), num_faces=int(d["num_faces"]),
            face_index=int(d["face_index"]), photo_to_crop=arr("photo_to_crop"), crop_to_photo=arr("crop_to_photo"),
            geometry=geometry, photo_size=tuple(int(v) for v in d["photo_size"]), source=str(d["source"]),
            point_source=str(d.get("point_source", "detector")),
            landmarks68=arr("landmarks68") if d.get("landmarks68") is not None else None,
            pose_warnings=tuple(str(w) for w in d.get("pose_warnings", ())))

    def save(self, image_path, json_path=None) -> None:
        """Write the crop as PNG and, if ``json_path`` is given, :meth:`to_dict` as JSON; atomically."""
        from PIL import Image

        from .._io import atomic_path, write_json_atomic

        with atomic_path(image_path, suffix=".png") as tmp:
            Image.fromarray(self.image).save(tmp, format="PNG")
        if json_path is not None:
            write_json_atomic(json_path, self.to_dict())

    def __repr__(self) -> str:
        return (f"AlignedFace(source={self.source!r}, yaw={self.yaw:.1f}, pitch={self.pitch:.1f}, "
                f"roll={self.roll:.1f}, score={self.score:.3f}, face {self.face_index + 1}/{self.num_faces})")


class Aligner:
    """Holds the detector and landmark models; reuse one for many photos.

    Models are shared process-wide (built once, on first use), so several ``Aligner`` objects
    with the same settings cost nothing extra.

    Args:
        threshold: detector confidence a face must exceed (official: 0.9).
        min_face_size: smallest face searched for, pixels; ``None`` (default) skips the MTCNN
            pyramid levels meant for faces under 10% of the photo's shorter side, which leaves
            the detections of bigger faces as with the official ``min_face_size=20`` (see
            :func:`~eg3d_invert.preprocessing.detection.auto_min_face_size`).
        five_points: which 5 points place the crop: ``"detector"`` (MTCNN's, like the official
            pipeline), ``"mesh"`` (from the mediapipe mesh: eye-corner midpoints, nose tip,
            mouth corners) or ``"dlib"`` (dlib's 68 points with Deep3DFaceRecon's 68 -> 5 rule;
            needs the predictor file, whose licence excludes commercial use).
        mirror_average: run MTCNN on the photo and on its mirror image and average each face's
            box and 5 points with the mirrored-back ones. MTCNN is not mirror-symmetric (its
            points move 1.5-9 px between a photo and its mirror image); with the average the crop
            of a mirrored photo is the mirrored crop (within 2 px), at the cost of a second MTCNN
            pass and of crops about twice as far from the official ones (whose MTCNN has the same
            bias). Default ``False``: MTCNN's own points, as the official pipeline. It moves the
            crop only with ``five_points="detector"`` (otherwise the averaged box just seeds the
            landmark models). See :mod:`.detection`.
        padding: ``"black"`` (official) or ``"reflect"`` for crop areas outside the photo.
        max_pixels: decompression-bomb limit for reading photos (``None``: no limit).
        device: torch device for MTCNN.
        dlib_model: path of ``shape_predictor_68_face_landmarks.dat`` (default: found in
            face-recognition-models).
        pose_model: head-pose model (default: the packaged one, see :mod:`.pose`).
    """

    def __init__(self, *, threshold: float = DEFAULT_THRESHOLD, min_face_size: int | None = None,
                 five_points: FivePointSource = "detector", padding: Padding = "black",
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, device: str = "cpu", dlib_model=None,
                 pose_model: PoseModel | None = None, mirror_average: bool = False):
        if five_points not in ("detector", "mesh", "dlib"):
            raise ValueError(f"five_points must be 'detector', 'mesh' or 'dlib', got {five_points!r}")
        if padding not in ("black", "reflect"):
            raise ValueError(f"padding must be 'black' or 'reflect', got {padding!r}")
        self.pose_model = pose_model or default_pose_model()
        self.detector = FaceDetector(threshold, min_face_size, device, mirror_average=mirror_average)
        self.landmarker = MeshLandmarker(mirror=self.pose_model.mesh_mirror)
        self.dlib = None
        if five_points == "dlib":
            box_map = self.pose_model.dlib_box_map
            self.dlib = DlibLandmarker(dlib_model, box_map=(0.0, 0.0, 1.0) if box_map is None else tuple(box_map))
        self.five_points = five_points
        self.padding = padding
        self.max_pixels = max_pixels

    # -- stages (public so that benchmarks and callers with their own detections can use them) --

    def read(self, photo: ImageSource) -> np.ndarray:
        """Stage 1: decode ``photo`` to ``(H, W, 3)`` uint8 RGB (see :func:`read_image`)."""
        return read_image(photo, max_pixels=self.max_pixels)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Stage 2: faces above the threshold, largest ``width + height`` first."""
        return self.detector(image)

    def locate_landmarks(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """Stage 3: the mediapipe mesh ``(478, 3)`` of one face (see :class:`MeshLandmarker`)."""
        return self.landmarker(image, detection.box)

    def crop_points(self, image: np.ndarray, detection: Detection,
                    mesh: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The 5 points ``(5, 2)`` that place the crop, and dlib's 68 points if they were used."""
        if self.five_points == "detector":
            return detection.points, None
        if self.five_points == "mesh":
            return five_points(mesh, MESH_FIVE), None
        pts68 = self.dlib(image, detection.box)
        return five_points(pts68, DLIB_FIVE), pts68

    def estimate_rotation(self, mesh: np.ndarray) -> np.ndarray:
        """Stage 5: head rotation ``Q`` (face frame -> OpenCV camera), see :mod:`.pose`."""
        return fit_mesh_rotation(mesh, self.pose_model)

    # -- whole pipeline --

    def align(self, photo: ImageSource, face_index: int = 0, *, name: str | None = None) -> AlignedFace:
        """Align one face of ``photo`` (``face_index`` 0: the largest, as the official pipeline).

        ``name`` overrides the source description used in messages and results (useful when
        ``photo`` is an already decoded array of a known file).

        Raises:
            ImageReadError (and subclasses): the photo cannot be read.
            NoFaceError: no face above the threshold; FaceIndexError: fewer faces than asked;
            LandmarkError: the face's landmarks could not be located.
        """
        if isinstance(face_index, bool) or not isinstance(face_index, (int, np.integer)) or face_index < 0:
            raise ValueError(f"face_index must be a non-negative integer, got {face_index!r}")
        name = name or source_name(photo)
        image = self.read(photo)
        faces = self._faces(image, name)
        if face_index >= len(faces):
            raise FaceIndexError(f"{name}: face index {face_index} requested but only {len(faces)} "
                                 f"face(s) found above confidence {self.detector.threshold}")
        return self.align_detection(image, faces[face_index], name=name, face_index=face_index,
                                    num_faces=len(faces))

    __call__ = align

    def align_all(self, photo: ImageSource, *, name: str | None = None) -> list[AlignedFace]:
        """Align every face above the threshold, largest first (raises ``NoFaceError`` if none)."""
        name = name or source_name(photo)
        image = self.read(photo)
        faces = self._faces(image, name)
        return [self.align_detection(image, f, name=name, face_index=i, num_faces=len(faces))
                for i, f in enumerate(faces)]

    def align_detection(self, image: np.ndarray, detection: Detection, *, name: str = "<array>",
                        face_index: int = 0, num_faces: int = 1) -> AlignedFace:
        """Stages 3-5 for one already detected face of a decoded ``(H, W, 3)`` uint8 image."""
        mesh = self.locate_landmarks(image, detection)
        points, pts68 = self.crop_points(image, detection, mesh)
        height, width = image.shape[:2]
        geometry = CropGeometry.from_points(points, (width, height))
        crop = crop_face(image, geometry, self.padding)
        rotation = self.estimate_rotation(mesh)
        return _result(crop, rotation, mesh, points, pts68, detection, geometry, name, face_index,
                       num_faces, self.five_points)

    def _faces(self, image: np.ndarray, name: str) -> list[Detection]:
        faces = self.detect(image)
        if not faces:
            h, w = image.shape[:2]
            smallest = self.detector.min_face_size or auto_min_face_size(w, h)
            raise NoFaceError(f"{name}: no face found above confidence {self.detector.threshold} in the "
                              f"{w}x{h} photo (faces under {smallest:.0f} px are not searched; strongly "
                              f"turned or covered faces are missed; a lower threshold or min face size may help)")
        return faces


def _result(crop, rotation, mesh, points, pts68, detection, geometry, name, face_index, num_faces,
            point_source) -> AlignedFace:
    label = label_from_rotation(rotation)
    yaw, pitch = label_angles(label[None])
    to_crop = geometry.photo_to_crop
    mesh = np.asarray(mesh, dtype=np.float64)
    roll = label_roll(label)
    warnings = pose_warnings(float(yaw[0]), float(pitch[0]), roll, float(detection.score), mesh,
                             tuple(geometry.photo_size))
    return AlignedFace(
        image=crop, label=label, yaw=float(yaw[0]), pitch=float(pitch[0]), roll=roll,
        landmarks=mesh, landmarks_crop=apply_affine(to_crop, mesh[:, :2]),
        points=np.asarray(points, dtype=np.float64), points_crop=apply_affine(to_crop, points),
        box=np.asarray(detection.box, dtype=np.float64), score=float(detection.score),
        num_faces=int(num_faces), face_index=int(face_index), photo_to_crop=to_crop,
        crop_to_photo=geometry.crop_to_photo, geometry=geometry,
        photo_size=tuple(geometry.photo_size), source=name, point_source=point_source,
        landmarks68=None if pts68 is None else np.asarray(pts68, dtype=np.float64), pose_warnings=warnings)


_DEFAULT: dict = {}
_DEFAULT_LOCK = threading.Lock()


def _default_aligner(**settings) -> Aligner:
    key = json.dumps({k: str(v) for k, v in sorted(settings.items())})
    with _DEFAULT_LOCK:
        aligner = _DEFAULT.get(key)
        if aligner is None:
            aligner = _DEFAULT[key] = Aligner(**settings)
        return aligner


def align(photo: ImageSource, *, face_index: int = 0, threshold: float = DEFAULT_THRESHOLD,
          five_points: FivePointSource = "detector", padding: Padding = "black",
          max_pixels: int | None = DEFAULT_MAX_PIXELS, mirror_average: bool = False) -> AlignedFace:
    """Align the face of one portrait photo: EG3D 512x512 crop + camera label.

    A convenience over :class:`Aligner` (reused between calls with the same settings).

    Example::

        from eg3d_invert.preprocessing import align
        face = align("portrait.jpg")
        face.image.shape   # (512, 512, 3)
        face.label.shape   # (25,)
    """
    aligner = _default_aligner(threshold=threshold, five_points=five_points, padding=padding,
                               max_pixels=max_pixels, mirror_average=mirror_average)
    return aligner.align(photo, face_index=face_index)
