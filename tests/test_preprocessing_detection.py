"""MTCNN detection with mirror averaging: the pure averaging is exactly mirror-equivariant, and
the detector gives a mirrored photo exactly mirrored points."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from eg3d_invert.preprocessing.detection import (FaceDetector, average_with_mirror, box_iou, match_boxes,
                                                 mirror_boxes, mirror_points)

W = 640


def _faces(rng, n: int, width: int = W) -> tuple[np.ndarray, np.ndarray]:
    """``n`` well separated random faces: boxes ``(n, 4)`` and 5 points ``(n, 5, 2)``."""
    boxes, points = [], []
    for i in range(n):
        side = rng.uniform(60, 90)
        x0, y0 = 10 + i * (width - 20) / n + rng.uniform(0, 10), rng.uniform(10, 200)
        boxes.append([x0, y0, x0 + side, y0 + side * rng.uniform(1.1, 1.3)])
        rel = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]) + rng.normal(0, 0.03, (5, 2))
        points.append([x0, y0] + rel * side)
    return np.array(boxes), np.array(points)


def test_mirroring_is_an_involution_and_swaps_sides():
    rng = np.random.default_rng(1)
    boxes, points = _faces(rng, 3)
    np.testing.assert_allclose(mirror_points(mirror_points(points, W), W), points, atol=1e-12)
    np.testing.assert_allclose(mirror_boxes(mirror_boxes(boxes, W), W), boxes, atol=1e-12)
    m = mirror_points(points, W)
    # the eye on the image left of the mirror image is the mirrored right eye (edge coordinates)
    np.testing.assert_allclose(m[:, 0, 0], W - points[:, 1, 0])
    np.testing.assert_allclose(m[:, 3], np.stack([W - points[:, 4, 0], points[:, 4, 1]], axis=1))
    mb = mirror_boxes(boxes, W)  # 1-based inclusive pixel indices: x -> W + 1 - x
    np.testing.assert_allclose(mb[:, [0, 2]], W + 1 - boxes[:, [2, 0]])
    assert np.all(mb[:, 2] > mb[:, 0])


def test_matching_is_one_to_one_symmetric_and_thresholded():
    rng = np.random.default_rng(2)
    a, _ = _faces(rng, 4)
    b = a[[2, 0, 3]] + rng.normal(0, 2.0, (3, 4))  # faces 2, 0, 3 again, slightly moved; no 1
    b = np.vstack([b, [[600, 400, 630, 440]]])       # and a face that a does not have
    m = match_boxes(a, b)
    np.testing.assert_array_equal(m, [1, -1, 0, 2])
    back = match_boxes(b, a)
    np.testing.assert_array_equal(back, [2, 0, 3, -1])
    assert np.all(box_iou(a, b)[m >= 0, m[m >= 0]] >= 0.5)
    assert np.all(match_boxes(a, b, min_iou=1.0) == -1)
    assert match_boxes(a, np.zeros((0, 4))).tolist() == [-1] * 4
    assert match_boxes(np.zeros((0, 4)), b).shape == (0,)


@pytest.mark.parametrize("seed", range(5))
def test_averaging_is_exactly_mirror_equivariant(seed):
    """Detections of a photo (``d``) and of its mirror image (``m``, MTCNN-like: the same faces
    moved by a few pixels, one face missing, one extra): averaging (d, m) and averaging (m, d)
    give exact mirror images of each other; faces without a counterpart keep their own."""
    rng = np.random.default_rng(seed)
    boxes, points = _faces(rng, 4)
    m_boxes = mirror_boxes(boxes, W) + rng.normal(0, 3.0, (4, 4))
    m_points = mirror_points(points, W) + rng.normal(0, 3.0, (4, 5, 2))
    # the mirror pass misses face 1 and finds an extra face; its order differs
    extra_b, extra_p = _faces(rng, 1)
    extra_b[:, 1] += 300
    extra_p[..., 1] += 300
    keep = [3, 0, 2]
    m_boxes, m_points = np.vstack([m_boxes[keep], extra_b]), np.vstack([m_points[keep], extra_p])

    b1, p1 = average_with_mirror(boxes, points, m_boxes, m_points, W)  # the photo
    b2, p2 = average_with_mirror(m_boxes, m_points, boxes, points, W)  # its mirror image
    # face i of the photo <-> face j of the mirror image
    for i, j in ((0, 1), (2, 2), (3, 0)):
        np.testing.assert_allclose(p2[j], mirror_points(p1[i], W), rtol=0, atol=1e-9)
        np.testing.assert_allclose(b2[j], mirror_boxes(b1[i], W), rtol=0, atol=1e-9)
        np.testing.assert_allclose(p1[i], (points[i] + mirror_points(m_points[j], W)) / 2, atol=1e-12)
        assert not np.allclose(p1[i], points[i])  # the average did move the points
    np.testing.assert_array_equal(p1[1], points[1])  # unmatched: unchanged
    np.testing.assert_array_equal(b1[1], boxes[1])
    np.testing.assert_array_equal(p2[3], m_points[3])
    # nothing found in the mirror image: the photo's own detections
    b3, p3 = average_with_mirror(boxes, points, np.zeros((0, 4)), np.zeros((0, 5, 2)), W)
    np.testing.assert_array_equal(p3, points)
    np.testing.assert_array_equal(b3, boxes)


@pytest.fixture(scope="module")
def two_faces() -> np.ndarray:
    import matplotlib.cbook
    import skimage.data

    from eg3d_invert.preprocessing import read_image

    grace = read_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    small = np.asarray(Image.fromarray(grace).resize((341, 400), Image.Resampling.LANCZOS))
    canvas = np.full((512, 512 + 341, 3), 200, np.uint8)
    canvas[:, :512] = skimage.data.astronaut()
    canvas[56:456, 512:] = small
    return canvas


def test_detector_gives_a_mirrored_photo_mirrored_points(two_faces):
    detector, plain = FaceDetector(mirror_average=True), FaceDetector()
    assert detector.mirror_average and not plain.mirror_average
    width = two_faces.shape[1]
    mirrored = np.ascontiguousarray(two_faces[:, ::-1])
    a, b = detector(two_faces), detector(mirrored)
    assert len(a) == len(b) == 2
    for fa, fb in zip(a, b):  # same ranking (by the averaged boxes)
        np.testing.assert_allclose(fb.points, mirror_points(fa.points, width), atol=1e-9)
        np.testing.assert_allclose(fb.box, mirror_boxes(fa.box, width), atol=1e-9)
    # MTCNN alone: not mirror-symmetric; the average lies between its two answers
    pa, pb = plain(two_faces), plain(mirrored)
    for fa, qa, qb in zip(a, pa, pb):
        raw = np.abs(qb.points - mirror_points(qa.points, width)).max()
        assert raw > 0.1
        np.testing.assert_allclose(fa.points, (qa.points + mirror_points(qb.points, width)) / 2, atol=1e-3)
        assert fa.score == pytest.approx(qa.score, abs=1e-6)


def test_detector_without_faces():
    detector = FaceDetector(mirror_average=True)
    noise = (np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8)
    assert detector(noise) == []
    assert detector(np.full((64, 64, 3), 128, np.uint8)) == []
    assert detector(np.zeros((8, 8, 3), np.uint8)) == []


def test_detector_reproduces_the_official_mtcnn_points():
    """The cascade run the official package's way gives the official (integer) points exactly,
    on every 10th head-turn photo (all 153 were checked when it was written)."""
    import json

    from eg3d_invert.preprocessing import read_image

    from .conftest import EVALDATA, require

    items = [it for it in json.loads(require(EVALDATA / "index.json").read_text())["items"] if it["kind"] == "original"]
    detector = FaceDetector()
    for item in items[::10]:
        face = detector(read_image(EVALDATA / item["image"]))[0]
        np.testing.assert_array_equal(face.points, np.loadtxt(EVALDATA / item["mtcnn_5pt_official"]),
                                      err_msg=item["image"])


def test_cascade_pieces_follow_the_official_arithmetic():
    from eg3d_invert.preprocessing.mtcnn import nms, patches, pyramid_scales, regressed, squared

    # a 1280x720 photo, minimum face 20 px: levels shrink by 0.709 until the short side is < 12 px
    scales = pyramid_scales(720, 1280, 20.0, 0.709)
    assert scales[0] == pytest.approx(0.6) and len(scales) == 11
    assert 720 * scales[-1] >= 12 > 720 * scales[-1] * 0.709
    boxes = np.array([[10, 10, 29, 29, 0.9], [12, 12, 31, 31, 0.95], [100, 100, 119, 119, 0.8]], dtype=float)
    np.testing.assert_array_equal(nms(boxes, boxes[:, 4], 0.5), [1, 2])  # best first, overlap removed
    np.testing.assert_array_equal(squared(np.array([[0.0, 0.0, 10.0, 20.0]])), [[-5.0, 0.0, 15.0, 20.0]])
    # regression offsets are in units of the inclusive box size (x1 - x0 + 1)
    np.testing.assert_allclose(regressed(np.array([[0.0, 0.0, 9.0, 9.0]]), np.array([[0.1, 0, -0.1, 0]])),
                               [[1.0, 0.0, 8.0, 9.0]])
    # a box past the photo's border is filled with zeros, not clipped and stretched
    image = np.full((20, 20, 3), 255.0)
    tile = patches(image, np.array([[11.0, 1.0, 30.0, 20.0]]), 20)[0]
    assert tile.shape == (3, 20, 20)
    assert np.allclose(tile[:, :, :10], (255 - 127.5) / 128) and np.allclose(tile[:, :, 10:], -127.5 / 128)
