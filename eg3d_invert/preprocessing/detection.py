"""Face detection with MTCNN, selected the way the official pipeline does.

The official ``batch_mtcnn.py`` runs MTCNN (ipazc/mtcnn, TensorFlow) on the RGB photo, keeps the
face with the largest ``box_width + box_height`` and accepts it only if its confidence is
above 0.9. The networks here are facenet-pytorch's copies of the same original MTCNN weights
(inside its wheel, so detection runs offline), run by :mod:`.mtcnn` with the official package's
resampling and integer arithmetic: the 5 points are the official ones to the pixel (they are
integers, as the official pipeline writes them), in the official order: eye on the image left,
eye on the image right, nose, mouth corner on the image left, on the image right.

MTCNN is not mirror-symmetric: on a photo and on its mirror image the same face gets points
1.5-9 px apart (after mirroring back), so the crop of a mirrored photo is not the mirrored crop.
With ``mirror_average=True`` the detector also runs on the mirror image and averages each face's
points and box with those of its mirrored counterpart; the points of a photo and of its mirror
image are then exact mirrors of each other. It is off by default: the official pipeline has
the same left-right bias, and removing it moves the points away from the official ones.

Coordinates, as the cascade computes them: a box ``(x0, y0, x1, y1)`` holds 1-based pixel
indices, first and last included, so it mirrors as ``x -> W + 1 - x``; a point is
``x0 - 1 + p * (x1 - x0 + 1)`` (cut to an integer) with ``p`` the fraction across that box, a
pixel *edge* coordinate (0 = left edge of the photo), which mirrors as ``x -> W - x``. That is
also the convention in which the official crop's horizontal placement (``t_x - W/2``) is
mirror-symmetric.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .mtcnn import detect_faces

_LOCK = threading.Lock()
_MTCNN_CACHE: dict = {}

#: Confidence a face must exceed, as in the official pipeline.
DEFAULT_THRESHOLD = 0.9
#: The official MTCNN settings: smallest face and pyramid step.
OFFICIAL_MIN_FACE = 20.0
PYRAMID_FACTOR = 0.709
#: Left/right partners of the 5 points (eyes and mouth corners swap in a mirror image).
MIRROR_FIVE = (1, 0, 2, 4, 3)
#: Smallest box IoU (after mirroring back) for a face and a mirror-image face to be the same face.
MIRROR_MATCH_IOU = 0.5
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
        """``width + height`` of the box as the official package reports it (integer corners,
        clipped at the photo's top-left): the official ranking key."""
        x0, y0 = max(0, int(self.box[0])), max(0, int(self.box[1]))
        return float(int(self.box[2] - x0) + int(self.box[3] - y0))

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0])


def mirror_points(points: np.ndarray, width: int) -> np.ndarray:
    """MTCNN points ``(..., 5, 2)`` of a photo ``width`` pixels wide -> the same points in its
    mirror image (``x -> W - x``, edge coordinates; left/right partners swapped)."""
    pts = np.asarray(points, dtype=np.float64)[..., MIRROR_FIVE, :].copy()
    pts[..., 0] = width - pts[..., 0]
    return pts


def mirror_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """MTCNN boxes ``(..., 4)`` of a photo ``width`` pixels wide -> the same boxes in its mirror
    image (``x -> W + 1 - x``: 1-based, inclusive pixel indices; x0 and x1 swap)."""
    b = np.asarray(boxes, dtype=np.float64).copy()
    b[..., [0, 2]] = (width + 1) - b[..., [2, 0]]
    return b


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union ``(N, M)`` of boxes ``a`` ``(N, 4)`` and ``b`` ``(M, 4)``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0, None)
    inter = iw * ih
    area = lambda x: np.clip(x[..., 2] - x[..., 0], 0, None) * np.clip(x[..., 3] - x[..., 1], 0, None)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_boxes(a: np.ndarray, b: np.ndarray, min_iou: float = MIRROR_MATCH_IOU) -> np.ndarray:
    """One-to-one matching of boxes ``a`` ``(N, 4)`` to ``b`` ``(M, 4)``: greedily the pair of
    highest IoU first, pairs under ``min_iou`` never. Returns ``(N,)`` indices into ``b``, -1 for
    no match. Symmetric: ``match_boxes(b, a)`` gives the inverse pairing (barring exact IoU ties)."""
    iou = box_iou(a, b)
    match = np.full(iou.shape[0], -1, dtype=np.int64)
    if iou.size == 0:
        return match
    order = np.argsort(-iou, axis=None, kind="stable")
    used_a, used_b = set(), set()
    for flat in order:
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < min_iou:
            break
        if i in used_a or j in used_b:
            continue
        match[i] = j
        used_a.add(i)
        used_b.add(j)
    return match


def average_with_mirror(boxes: np.ndarray, points: np.ndarray, mirror_boxes_: np.ndarray,
                        mirror_points_: np.ndarray, width: int,
                        min_iou: float = MIRROR_MATCH_IOU) -> tuple[np.ndarray, np.ndarray]:
    """Average the detections of a photo with those of its mirror image.

    Args:
        boxes, points: ``(N, 4)``, ``(N, 5, 2)`` MTCNN detections in the photo.
        mirror_boxes_, mirror_points_: ``(M, 4)``, ``(M, 5, 2)`` MTCNN detections in the mirror
            image (its own coordinates).
        width: ``W`` of the photo.

    Returns:
        ``(boxes, points)`` ``(N, 4)``, ``(N, 5, 2)``: each face matched (IoU >= ``min_iou``
        after mirroring back, see :func:`match_boxes`) to a mirror-image face gets the mean of
        its own and the mirrored-back box and points; unmatched faces keep theirs. Swapping
        the two inputs gives the mirror image of the result (to rounding).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
    back_boxes = mirror_boxes(np.asarray(mirror_boxes_, dtype=np.float64).reshape(-1, 4), width)
    back_points = mirror_points(np.asarray(mirror_points_, dtype=np.float64).reshape(-1, 5, 2), width)
    match = match_boxes(boxes, back_boxes, min_iou)
    out_boxes, out_points = boxes.copy(), points.copy()
    found = match >= 0
    out_boxes[found] = (boxes[found] + back_boxes[match[found]]) / 2.0
    out_points[found] = (points[found] + back_points[match[found]]) / 2.0
    return out_boxes, out_points


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
        mirror_average: also detect on the mirror image of the photo (one batch with the photo)
            and average each face's points and box with its mirrored counterpart's (see
            :func:`average_with_mirror`), so that a mirrored photo gets exactly mirrored points.
            Faces without a counterpart keep their own. Which faces are accepted and their
            scores follow the photo's own pass (the order: the averaged boxes). Costs a second
            MTCNN pass. Default ``False``: MTCNN's points as they are, like the official
            pipeline, whose crops they match about twice as closely (see the module docstring).
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, min_face_size: float | None = None, device: str = "cpu",
                 num_threads: int | None = 1, mirror_average: bool = False):
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
        self.mirror_average = bool(mirror_average)
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
                boxes, probs, points = detect_faces(image, self._model, min_face, PYRAMID_FACTOR)
                if self.mirror_average:
                    m_boxes, _, m_points = detect_faces(np.ascontiguousarray(image[:, ::-1]), self._model,
                                                        min_face, PYRAMID_FACTOR)
            finally:
                torch.set_num_threads(saved)
        if len(boxes) == 0:
            return []
        if self.mirror_average:
            boxes, points = average_with_mirror(boxes, points, m_boxes, m_points, width)
        found = [Detection(b, float(p), pt) for b, p, pt in zip(boxes, probs, points) if p > self.threshold]
        # Stable sort: ties keep the detector's (probability) order.
        return sorted(found, key=lambda d: -d.size)
