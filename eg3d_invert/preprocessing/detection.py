"""Face detection with MTCNN (facenet-pytorch), selected the way the official pipeline does.

The official ``batch_mtcnn.py`` runs MTCNN (ipazc/mtcnn, TensorFlow) on the RGB photo, keeps the
face with the largest ``box_width + box_height`` and accepts it only if its confidence is
above 0.9. facenet-pytorch's MTCNN is the same network family with the same defaults
(minimum face 20 px, pyramid factor 0.709, stage thresholds 0.6/0.7/0.7) and its weights ship
inside the wheel, so detection runs offline. Its 5 points come in the official order: eye on
the image left, eye on the image right, nose, mouth corner on the image left, on the image right.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

_LOCK = threading.Lock()
_MTCNN_CACHE: dict = {}

#: The official MTCNN settings: smallest face and pyramid step.
OFFICIAL_MIN_FACE = 20.0
PYRAMID_FACTOR = 0.709
#: With ``min_face_size=None``, faces under this fraction of the shorter photo side are not searched.
AUTO_MIN_FACE_FRACTION = 0.10


def auto_min_face_size(width: int, height: int, fraction: float = AUTO_MIN_FACE_FRACTION) -> float:
    """Largest ``20 / 0.709**k`` not above ``fraction * min(width, height)`` (at least 20).

    MTCNN's pyramid scales are ``(12 / min_face) * 0.709**i``; a minimum face of ``20 / 0.709**k``
    therefore runs exactly the official pyramid minus its ``k`` finest (most expensive) levels,
    which are there to find faces smaller than that. Bigger faces normally get identical
    detections (checked: all 155 test photos, points equal to the last bit); rarely a candidate
    from a skipped level would have won the final non-maximum suppression, moving the box and
    points by about a pixel (seen when skipping 4 levels of a 720-line photo).
    """
    limit = fraction * min(width, height)
    k = 0
    while OFFICIAL_MIN_FACE / PYRAMID_FACTOR ** (k + 1) <= limit:
        k += 1
    return OFFICIAL_MIN_FACE / PYRAMID_FACTOR ** k


@dataclass(frozen=True)
class Detection:
    """One detected face.

    Attributes:
        box: ``(4,)`` float64 ``(x0, y0, x1, y1)`` in photo pixels.
        score: detector confidence in ``[0, 1]``.
        points: ``(5, 2)`` float64 landmarks in photo pixels (MTCNN order, see module docstring).
    """

    box: np.ndarray
    score: float
    points: np.ndarray

    @property
    def size(self) -> float:
        """``width + height`` of the box: the official ranking key."""
        return float((self.box[2] - self.box[0]) + (self.box[3] - self.box[1]))

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0])


def shared_mtcnn(device: str = "cpu"):
    """The process-wide facenet-pytorch MTCNN for ``device`` and its lock (built on first use)."""
    key = str(device)
    with _LOCK:
        entry = _MTCNN_CACHE.get(key)
        if entry is None:
            from facenet_pytorch import MTCNN  # heavy import, deferred until a face is needed

            model = MTCNN(keep_all=True, select_largest=False, min_face_size=20, device=device)
            model.eval()
            entry = _MTCNN_CACHE[key] = (model, threading.Lock())
        return entry


class FaceDetector:
    """MTCNN detector returning :class:`Detection` objects ranked like the official pipeline.

    Args:
        threshold: minimum confidence of an accepted face (official: strictly above 0.9).
        min_face_size: smallest face (pixels) searched for by the MTCNN pyramid; ``None`` picks
            :func:`auto_min_face_size` per photo (for faces above 10% of the shorter side, the
            same detections as the official 20, at about half the cost).
        device: torch device for the networks.
        num_threads: torch intra-op threads while detecting (``None``: leave torch's setting).
            The default 1 is faster: MTCNN's networks are small, and extra threads cost more than
            they save, much more when the cores are shared (measured 2-5x slower with 2 threads
            on a busy 2-core machine). Torch's thread count is process-wide, so it is switched
            for the duration of the call and restored after.
    """

    def __init__(self, threshold: float = 0.9, min_face_size: float | None = None, device: str = "cpu",
                 num_threads: int | None = 1):
        if not 0.0 <= float(threshold) < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        if min_face_size is not None and float(min_face_size) < 12:
            raise ValueError(f"min_face_size must be at least 12 pixels, got {min_face_size}")
        self.threshold = float(threshold)
        self.min_face_size = None if min_face_size is None else float(min_face_size)
        self.device = device
        if num_threads is not None and int(num_threads) < 1:
            raise ValueError(f"num_threads must be positive or None, got {num_threads}")
        self.num_threads = None if num_threads is None else int(num_threads)
        self._model, self._lock = shared_mtcnn(device)

    def __call__(self, image: np.ndarray) -> list[Detection]:
        """All faces above the threshold, largest ``width + height`` first.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
        """
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be an (H, W, 3) uint8 array, got {getattr(image, 'shape', None)}")
        if min(image.shape[:2]) < 12:
            return []
        import torch

        height, width = image.shape[:2]
        min_face = self.min_face_size or auto_min_face_size(width, height)
        with self._lock, torch.inference_mode():
            saved = torch.get_num_threads()
            if self.num_threads is not None:
                torch.set_num_threads(self.num_threads)
            try:
                self._model.min_face_size = min_face
                boxes, probs, points = self._model.detect(image, landmarks=True)
            finally:
                torch.set_num_threads(saved)
        if boxes is None or len(boxes) == 0 or points is None:
            return []
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
        found = [Detection(b, float(p), pt) for b, p, pt in zip(boxes, probs, points) if p > self.threshold]
        # Stable sort: ties keep the detector's (probability) order.
        return sorted(found, key=lambda d: -d.size)
