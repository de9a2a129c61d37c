"""The MTCNN cascade run the way the official EG3D pipeline's detector runs it.

The official ``batch_mtcnn.py`` uses the ``mtcnn`` pip package (ipazc/mtcnn 0.1.x, TensorFlow).
Its networks are the original MTCNN weights, the same ones facenet-pytorch ships, so we take
the three networks from facenet-pytorch (weights inside its wheel, no download) and run the
cascade here, with the official package's arithmetic rather than facenet-pytorch's. The two
cascades differ in ways that move the 5 points by about a pixel on average and by up to 11 px
on the evaluation head turn (hence up to 4% in crop scale):

* resampling: the pyramid and the 24/48-px patches are resized with OpenCV's ``INTER_AREA``
  (pyramid levels from the uint8 photo, rounded back to uint8; patches in floating point), not
  with torch's adaptive average pooling;
* boxes are cut to integers (toward zero) before each refinement stage, and the 5 points are
  placed in the integer box of the last stage;
* a box reaching past the photo border is filled with zeros to stay square, not clipped and
  stretched;
* the package returns the points cut to integers (``int()``), and that is what the official
  pipeline writes and crops with;
* one quirk of the original MATLAB code is kept: when exactly one pyramid cell passes the
  first threshold, its box regression is read from the vertically mirrored map.

With these, the points equal the official ones exactly on all 153 photos of the evaluation head
turn (``tests/test_preprocessing_detection.py`` checks a sample).
"""

from __future__ import annotations

import numpy as np

#: First-stage network geometry: output stride and receptive field of the fully convolutional P-Net.
PNET_STRIDE = 2
PNET_CELL = 12
#: Confidence each stage needs (official defaults).
STAGE_THRESHOLDS = (0.6, 0.7, 0.7)
#: Non-maximum-suppression overlaps: within a pyramid level, across levels / after R-Net, after O-Net.
NMS_LEVEL, NMS_STAGE, NMS_FINAL = 0.5, 0.7, 0.7


def pyramid_scales(height: int, width: int, min_face: float, factor: float) -> list[float]:
    """Scales of the image pyramid: a face of ``min_face`` px becomes P-Net's 12-px cell at the
    first level; levels shrink by ``factor`` while the shorter side stays at least 12 px."""
    first = 12.0 / min_face
    side = min(height, width) * first
    scales = []
    while side >= 12:
        scales.append(first * factor ** len(scales))
        side *= factor
    return scales


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression on inclusive integer-style boxes ``(N, 4)``.

    ``mode`` ``"union"``: overlap is IoU; ``"min"``: intersection over the smaller area. Boxes
    overlapping a kept one by more than ``threshold`` are dropped. Returns kept indices, best first.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x0, y0, x1, y1 = (boxes[:, i] for i in range(4))
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(scores)  # ascending; the official code takes the last (best) each round
    keep = []
    while order.size:
        best, rest = order[-1], order[:-1]
        keep.append(best)
        w = np.maximum(0.0, np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]) + 1)
        inter = w * h
        if mode == "min":
            overlap = inter / np.minimum(area[best], area[rest])
        else:
            overlap = inter / (area[best] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def squared(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares about their centres (side = the longer side)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def regressed(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply a refinement stage's box regression (offsets in units of the inclusive box size)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0:4] = boxes[:, 0:4] + offsets[:, 0:4] * np.stack([w, h, w, h], axis=1)
    return out


def patches(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Cut each (integer, 1-based inclusive) box out of ``image``, zero outside the photo, and
    resize it to ``size`` x ``size`` with area averaging; normalized as the networks expect.

    Returns ``(N, 3, size, size)`` float32.
    """
    import cv2

    height, width = image.shape[:2]
    out = np.empty((len(boxes), size, size, 3), dtype=np.float64)
    for k, (x0, y0, x1, y1) in enumerate(boxes[:, :4].astype(np.int64)):
        tile = np.zeros((y1 - y0 + 1, x1 - x0 + 1, 3), dtype=np.float64)
        cx0, cy0, cx1, cy1 = max(x0, 1), max(y0, 1), min(x1, width), min(y1, height)
        if cx1 >= cx0 and cy1 >= cy0:
            tile[cy0 - y0:cy1 - y0 + 1, cx0 - x0:cx1 - x0 + 1] = image[cy0 - 1:cy1, cx0 - 1:cx1]
        out[k] = cv2.resize(tile, (size, size), interpolation=cv2.INTER_AREA)
    return ((out - 127.5) * 0.0078125).astype(np.float32).transpose(0, 3, 1, 2)


def _run(net, batch: np.ndarray) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        return [o.float().cpu().numpy() for o in net(torch.from_numpy(np.ascontiguousarray(batch)).to(
            next(net.parameters()).device))]


def _first_stage(image: np.ndarray, pnet, scales: list[float], threshold: float) -> np.ndarray:
    """P-Net over the pyramid: candidate boxes ``(N, 5)`` (integer corners, score), squared."""
    import cv2

    height, width = image.shape[:2]
    found = []
    for scale in scales:
        level = cv2.resize(image, (int(np.ceil(width * scale)), int(np.ceil(height * scale))),
                           interpolation=cv2.INTER_AREA)
        level = ((level - 127.5) * 0.0078125).astype(np.float32).transpose(2, 0, 1)[None]
        reg, prob = _run(pnet, level)
        prob, reg = prob[0, 1], reg[0]  # (h, w), (4, h, w)
        rows, cols = np.nonzero(prob >= threshold)
        if rows.size == 0:
            continue
        if rows.size == 1:  # the MATLAB quirk the official code keeps (module docstring)
            reg = reg[:, :, ::-1]
        cells = np.stack([cols, rows], axis=1).astype(np.float64)
        boxes = np.concatenate([np.fix((PNET_STRIDE * cells + 1) / scale),
                                np.fix((PNET_STRIDE * cells + PNET_CELL) / scale),
                                prob[rows, cols][:, None], reg[:, rows, cols].T], axis=1)
        found.append(boxes[nms(boxes, boxes[:, 4], NMS_LEVEL)])
    if not found:
        return np.zeros((0, 5))
    boxes = np.concatenate(found)
    boxes = boxes[nms(boxes, boxes[:, 4], NMS_STAGE)]
    # first-stage regression is in units of the exclusive box size
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    refined = np.stack([boxes[:, 0] + boxes[:, 5] * w, boxes[:, 1] + boxes[:, 6] * h,
                        boxes[:, 2] + boxes[:, 7] * w, boxes[:, 3] + boxes[:, 8] * h, boxes[:, 4]], axis=1)
    refined = squared(refined)
    refined[:, :4] = np.fix(refined[:, :4])
    return refined


def detect_faces(image: np.ndarray, nets, min_face: float = 20.0, factor: float = 0.709,
                 thresholds: tuple[float, float, float] = STAGE_THRESHOLDS
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the three-stage cascade on one photo.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        nets: an object with ``pnet``, ``rnet``, ``onet`` (facenet-pytorch's ``MTCNN`` has them).
        min_face, factor: pyramid settings (official: 20 px, 0.709).

    Returns:
        ``boxes`` ``(N, 4)`` float64 ``(x0, y0, x1, y1)`` (1-based inclusive pixel indices, as the
        official package), ``scores`` ``(N,)``, ``points`` ``(N, 5, 2)`` float64 holding the
        official integer points (eye image-left, eye image-right, nose, mouth corners).
    """
    empty = np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
    height, width = image.shape[:2]
    boxes = _first_stage(image, nets.pnet, pyramid_scales(height, width, min_face, factor), thresholds[0])
    if len(boxes) == 0:
        return empty
    pixels = image.astype(np.float64)
    # second stage: R-Net on 24-px patches
    reg, prob = _run(nets.rnet, patches(pixels, boxes, 24))
    keep = prob[:, 1] > thresholds[1]
    boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2]], axis=1)
    reg = reg[keep]
    if len(boxes) == 0:
        return empty
    pick = nms(boxes, boxes[:, 4], NMS_STAGE)
    boxes = squared(regressed(boxes[pick], reg[pick]))
    # third stage: O-Net on 48-px patches of the integer boxes; points placed in those boxes
    boxes[:, :4] = np.fix(boxes[:, :4])
    reg, marks, prob = _run(nets.onet, patches(pixels, boxes, 48))
    keep = prob[:, 1] > thresholds[2]
    boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2]], axis=1)
    reg, marks = reg[keep], marks[keep]
    if len(boxes) == 0:
        return empty
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    points = np.stack([w[:, None] * marks[:, :5] + boxes[:, 0:1] - 1,
                       h[:, None] * marks[:, 5:] + boxes[:, 1:2] - 1], axis=-1)
    boxes = regressed(boxes, reg)
    pick = nms(boxes, boxes[:, 4], NMS_FINAL, "min")
    return boxes[pick, :4], boxes[pick, 4], np.trunc(points[pick])
